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
        # PyJWT's key client takes whole seconds, more than 0, and http(s) URLs only:
        # refused here, not at the first $connect.
        ("TETHER_JWKS_CACHE_SECONDS", "0.5"),
        ("TETHER_JWKS_TIMEOUT_SECONDS", "-1"),
        ("TETHER_JWKS_TIMEOUT_SECONDS", "soon"),
        ("TETHER_JWKS_URL", "x.supabase.co/auth/v1/.well-known/jwks.json"),
        ("TETHER_JWKS_URL", "file:///etc/jwks.json"),
        ("SUPABASE_URL", "x.supabase.co"),
        ("TETHER_SUPABASE_URL", "ftp://x.supabase.co"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        # A duration out of bounds is said as a duration, not pydantic's "Input should
        # be less than or equal to 600".
        ("TETHER_IDLE_TIMEOUT_SECONDS", "3600", "TETHER_IDLE_TIMEOUT_SECONDS: at most 10m (600 s)"),
        (
            "TETHER_MAX_DURATION_SECONDS",
            "10800",
            "TETHER_MAX_DURATION_SECONDS: at most 2h (7200 s)",
        ),
        ("TETHER_IDLE_TIMEOUT_SECONDS", "0", "TETHER_IDLE_TIMEOUT_SECONDS: more than 0"),
        # A handshake waits for the key set's fetch: none at all, or one past what
        # $connect's function has, is refused here, not met at an outage.
        ("TETHER_JWKS_TIMEOUT_SECONDS", "0", "TETHER_JWKS_TIMEOUT_SECONDS: more than 0"),
        ("TETHER_JWKS_TIMEOUT_SECONDS", "30", "TETHER_JWKS_TIMEOUT_SECONDS: at most 5s (5 s)"),
        # nan was told whichever bound it broke first: "at most 1d (86400 s)".
        ("TETHER_HEARTBEAT_INTERVAL_SECONDS", "nan", "_SECONDS: a finite number"),
        ("TETHER_GONE_SETTLE_SECONDS", "nan", "_SECONDS: a finite number"),
        ("TETHER_SWEEP_SCHEDULE_SECONDS", "1e309", "_SECONDS: a finite number"),
    ],
)
def test_a_duration_out_of_bounds_is_said_as_a_duration(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert says in str(refused.value)
    assert "Input should be" not in str(refused.value)


@pytest.mark.parametrize("value", ["banana", "30 seconds", "1e"])
def test_a_heartbeat_grace_that_is_no_number_says_off_is_the_other_choice(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "TETHER_HEARTBEAT_GRACE_SECONDS: a number of seconds, or off" in str(refused.value)
    assert "Input should be" not in str(refused.value)


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "spaces"])
def test_a_blank_heartbeat_grace_is_refused_not_taken_as_off(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An .env template's empty line: taken as off, it dropped the bound on silent
    clients without a word."""
    monkeypatch.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "TETHER_HEARTBEAT_GRACE_SECONDS: is empty" in str(refused.value)
    assert "off" in str(refused.value)


@pytest.mark.parametrize("value", ["off", "OFF", " 45 ", "45.5"])
def test_a_heartbeat_grace_of_a_number_or_off_is_taken(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TETHER_HEARTBEAT_GRACE_SECONDS", value)
    expected = None if value.lower() == "off" else float(value)
    assert load_settings().heartbeat_grace_seconds == expected


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        (
            {"TETHER_HEARTBEAT_INTERVAL_SECONDS": "9999"},
            "TETHER_HEARTBEAT_GRACE_SECONDS (30) must be more than"
            " TETHER_HEARTBEAT_INTERVAL_SECONDS (9999)",
        ),
        (
            {"TETHER_HEARTBEAT_INTERVAL_SECONDS": "8", "TETHER_HEARTBEAT_GRACE_SECONDS": "off"},
            "TETHER_HEARTBEAT_THROTTLE_SECONDS (10) must be under"
            " TETHER_HEARTBEAT_INTERVAL_SECONDS (8)",
        ),
    ],
)
def test_settings_that_disagree_are_named_as_the_environment_names_them(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], says: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert says in str(refused.value)
    assert "_seconds" not in str(refused.value)


SHORT_SECRET = "short-hs256-secret-0123456789ab"  # 31 bytes: one short of HS256's 256 bits


@pytest.mark.parametrize("name", ["TETHER_JWT_SECRET", "SUPABASE_JWT_SECRET"])
@pytest.mark.parametrize("secret", ["x", SHORT_SECRET, "\u00e9" * 15])
def test_an_hs256_secret_shorter_than_256_bits_is_refused_and_not_repeated(
    monkeypatch: pytest.MonkeyPatch, name: str, secret: str
) -> None:
    # One that short can be found offline from any token it signed.
    monkeypatch.setenv(name, secret)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    said = str(refused.value)
    assert said.startswith("invalid configuration: TETHER_JWT_SECRET: must be at least 32 bytes")
    assert secret not in said


@pytest.mark.parametrize("secret", [SHORT_SECRET + "c", "\u00e9" * 16, "ssm:/tether/jwt-secret"])
def test_an_hs256_secret_of_256_bits_or_a_reference_to_one_is_taken(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    # A reference is checked once read, where the verifier is made.
    monkeypatch.setenv("TETHER_JWT_SECRET", secret)
    assert load_settings().jwt_secret == secret


def test_supabase_url_gives_issuer_and_jwks_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co/")
    settings = load_settings()
    assert settings.issuer == "https://abc.supabase.co/auth/v1"
    assert settings.signing_keys_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
    settings.require_authentication()


def test_no_verification_and_no_anonymous_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TETHER_ALLOW_ANONYMOUS"):
        load_settings().require_authentication()


@pytest.mark.parametrize(
    ("jwks_url", "cache_seconds"),
    [("keys.example.invalid/jwks.json", 300.0), ("https://keys.example.invalid/jwks.json", 0.5)],
)
def test_a_verifier_made_with_keys_the_token_library_refuses_is_a_configuration_error(
    jwks_url: str, cache_seconds: float
) -> None:
    from tether.auth import TokenVerifier  # noqa: PLC0415

    with pytest.raises(ConfigurationError, match="TETHER_JWKS_URL"):
        TokenVerifier(
            audience="authenticated",
            issuer="https://keys.example.invalid/auth/v1",
            jwks_url=jwks_url,
            jwks_cache_seconds=cache_seconds,
        )


def test_the_settings_never_show_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """An application logging its settings (or a traceback with its locals) showed the
    service key, the database password, the JWT secret and the operator key whole."""
    secrets = {
        "TETHER_DATABASE_URL": "postgresql://tether:db-password-4f1c@db.example.com/postgres",
        "SUPABASE_URL": "https://project.supabase.co",
        "TETHER_SUPABASE_SERVICE_KEY": "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz",
        "TETHER_JWT_SECRET": "a-legacy-jwt-secret-of-at-least-32-characters",
        "TETHER_OPERATOR_KEY": "operator-key-0123456789",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    config = load_settings()
    assert config.supabase_service_key == secrets["TETHER_SUPABASE_SERVICE_KEY"]
    assert config.operator_key == secrets["TETHER_OPERATOR_KEY"]
    shown = repr(config) + str(config)
    assert "https://project.supabase.co" in shown  # no secret: still shown
    for secret in ("db-password-4f1c", "sb_secret_", "a-legacy-jwt-secret", "operator-key-"):
        assert secret not in shown
