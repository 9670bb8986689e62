"""Configuration: one class, clear errors naming the setting, secrets by reference."""

from __future__ import annotations

import pytest

from tether import runtime
from tether.errors import ConfigurationError
from tether.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "TETHER_DATABASE_URL",
        "SUPABASE_URL",
        "SUPABASE_JWT_SECRET",
        "TETHER_JWT_SECRET",
        "TETHER_JWKS_URL",
        "TETHER_ALLOW_ANONYMOUS",
    ):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()


def test_missing_database_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="TETHER_DATABASE_URL"):
        load_settings().require_store()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TETHER_HEARTBEAT_THROTTLE_SECONDS", "-1"),
        ("TETHER_HEARTBEAT_THROTTLE_SECONDS", "100000"),
        ("TETHER_HEARTBEAT_THROTTLE_SECONDS", "nan"),
        ("TETHER_HEARTBEAT_THROTTLE_SECONDS", "soon"),
        ("TETHER_ALLOW_ANONYMOUS", "perhaps"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_supabase_url_gives_issuer_and_jwks_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co/")
    settings = load_settings()
    assert settings.issuer == "https://abc.supabase.co/auth/v1"
    assert settings.signing_keys_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
    settings.require_authentication()


def test_no_verification_and_no_anonymous_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TETHER_ALLOW_ANONYMOUS"):
        load_settings().require_authentication()
