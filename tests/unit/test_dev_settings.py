"""`tether dev`'s settings: the production ones, read as production reads them, with
what a laptop run changes only where the environment is silent."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator

import pytest

from tether.errors import ConfigurationError
from tether.local.dev import (
    PORTS_TRIED_FOR_ANOTHER,
    DevOptions,
    _describe_tokens,
    bind,
    dev_settings,
)

DATABASE = "postgresql://postgres@localhost/postgres"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.upper().startswith(("TETHER_", "SUPABASE_")) or name.upper() == "DATABASE_URL":
            monkeypatch.delenv(name)


def test_a_silent_environment_gets_the_laptop_s_choices() -> None:
    config = dev_settings(DevOptions(port=4711), DATABASE)
    assert config.allow_anonymous is True
    assert config.announce_to == "log"
    assert config.jwt_issuer == "http://127.0.0.1:4711/auth/v1"
    assert config.operator_key


def test_the_run_s_operator_key_never_begins_or_ends_with_a_dash() -> None:
    # One key in 32 began or ended with "-" (a banner printed --j_iWld...): handed to a
    # tool it reads as an option, and a terminal's double-click leaves the dashes behind.
    keys = [dev_settings(DevOptions(port=4711), DATABASE).operator_key for _ in range(400)]
    assert all(key and key[0].isalnum() and key[-1].isalnum() for key in keys)
    assert len(set(keys)) == len(keys)
    assert all(len(str(key)) == 32 for key in keys)


@pytest.mark.parametrize("name", ["TETHER_SUPABASE_URL", "SUPABASE_URL", "supabase_url"])
def test_a_supabase_project_named_by_any_of_its_names_keeps_its_issuer(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # With the project's keys and the laptop's issuer, every real token was refused.
    monkeypatch.setenv(name, "https://proj.supabase.co")
    config = dev_settings(DevOptions(port=4711), DATABASE)
    assert config.jwt_issuer is None
    assert config.issuer == "https://proj.supabase.co/auth/v1"
    assert config.signing_keys_url == "https://proj.supabase.co/auth/v1/.well-known/jwks.json"


def test_settings_given_in_lower_case_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("tether_jwt_issuer", "https://issuer.example/auth/v1")
    monkeypatch.setenv("tether_operator_key", "an-operator-key-of-mine-0123")
    monkeypatch.setenv("tether_allow_anonymous", "false")
    monkeypatch.setenv("tether_announce_to", "eventbridge")
    config = dev_settings(DevOptions(port=4711), DATABASE)
    assert config.jwt_issuer == "https://issuer.example/auth/v1"
    assert config.operator_key == "an-operator-key-of-mine-0123"
    assert config.allow_anonymous is False
    assert config.announce_to == "eventbridge"


def test_a_malformed_anonymous_setting_is_refused_as_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_ALLOW_ANONYMOUS", "ture")
    with pytest.raises(ConfigurationError, match="TETHER_ALLOW_ANONYMOUS"):
        dev_settings(DevOptions(port=4711), DATABASE)


def test_a_short_hs256_secret_is_refused_as_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_JWT_SECRET", "too-short-secret")
    with pytest.raises(ConfigurationError, match="TETHER_JWT_SECRET: must be at least 32 bytes"):
        dev_settings(DevOptions(port=4711), DATABASE)


def test_a_run_gives_the_process_its_stdout_back() -> None:
    """A run wraps stdout for whole lines from every thread; an embedding process (a
    test, a tool) that runs it twice wrapped the wrapper, for good."""
    import sys  # noqa: PLC0415

    from tether.errors import InvalidInputError  # noqa: PLC0415
    from tether.local.dev import run  # noqa: PLC0415

    before = sys.stdout
    with pytest.raises(InvalidInputError, match="route selection"):
        run(DevOptions(port=4711, route_selection="body.action"), lambda _: None)
    assert sys.stdout is before


def test_a_key_kept_in_a_secret_is_not_offered_as_the_variable_s_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$TETHER_OPERATOR_KEY would put the secret's reference in the header, not the key."""
    from tether.local.dev import _banner  # noqa: PLC0415

    monkeypatch.setenv("TETHER_OPERATOR_KEY", "ssm:/tether/operator-key")
    options = DevOptions(port=4711)
    said: list[str] = []
    _banner(
        said.append,
        options=options,
        config=dev_settings(options, DATABASE),
        url=DATABASE,
        database=None,
        applied=0,
        leftovers=0,
    )
    banner = "\n".join(said)
    assert "kept in the secret TETHER_OPERATOR_KEY" in banner
    assert "$TETHER_OPERATOR_KEY" not in banner
    assert "Bearer <the key in that secret>" in banner


@pytest.mark.parametrize(
    ("host", "reached_at"),
    [
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104 - a host under test, not a bind
        ("::", "[::1]"),
        ("::0", "[::1]"),
        ("0:0:0:0:0:0:0:0", "[::1]"),
        ("127.0.0.1", "127.0.0.1"),
        ("192.168.1.20", "192.168.1.20"),
        ("::1", "[::1]"),
        ("laptop.local", "laptop.local"),
    ],
)
def test_a_dev_on_every_interface_hands_out_loopback(host: str, reached_at: str) -> None:
    """A wildcard address, however spelled, is no place to connect to: AWS clients take
    it for a remote host that needs a region and credentials."""
    config = dev_settings(DevOptions(host=host, port=4711), DATABASE)
    assert config.connections_endpoint == f"http://{reached_at}:4711/local"


def test_the_banner_names_the_issuer_without_credentials_in_its_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://user:S3cr3tPW-xyz@proj.supabase.co")
    config = dev_settings(DevOptions(port=4711), DATABASE)
    line = _describe_tokens(config)
    assert "iss 'https://***@proj.supabase.co/auth/v1'" in line
    assert "S3cr3tPW" not in line


def _held(port: int) -> socket.socket | None:
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
    except OSError:
        holder.close()
        return None
    holder.listen()
    return holder


def _suggested(port: int) -> int:
    with pytest.raises(ConfigurationError) as refused:
        bind("127.0.0.1", port)
    said = re.search(
        r"tether dev --port (\d+) \(make dev ARGS=\"--port (\d+)\"\)", str(refused.value)
    )
    assert said is not None, str(refused.value)
    assert said.group(1) == said.group(2)
    return int(said.group(1))


def test_a_taken_port_s_message_suggests_a_port_that_is_free() -> None:
    """It suggested the next port whatever it was: one taken too (a second dev run, a
    database), or, for 65535, the port 65536 that --port then refuses."""
    with contextlib.ExitStack() as held:
        first = held.enter_context(socket.socket())
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        following = _held(port + 1)
        if following is None:
            pytest.skip(f"port {port + 1} is taken by another process")
        held.enter_context(following)
        other = _suggested(port)
        # Near it, and neither it nor the next, both held.
        assert other not in (port, port + 1)
        assert abs(other - port) <= PORTS_TRIED_FOR_ANOTHER
        with _bound_now(other):
            pass
        last = _held(65535)
        if last is None:
            pytest.skip("port 65535 is taken by another process")
        held.enter_context(last)
        other = _suggested(65535)
        # None past it: one just under it (it suggested 65536, which --port refuses).
        assert 65535 - PORTS_TRIED_FOR_ANOTHER <= other <= 65534
        with _bound_now(other):
            pass


@contextlib.contextmanager
def _bound_now(port: int) -> Iterator[None]:
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", port))
        yield
    finally:
        probe.close()
