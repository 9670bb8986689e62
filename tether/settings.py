"""All configuration, in one settings class, read from the environment.

Each setting is ``TETHER_<NAME>`` (any case), or one of the names its
``validation_alias`` lists, the first present winning; values given to
``load_settings`` win over the environment. This is what a pydantic-settings
``BaseSettings`` with ``env_prefix="TETHER_"`` reads, done by a few lines over
``os.environ``: pydantic-settings' source machinery costs ``$connect``'s cold start a
tenth of a second, and the values here are all scalars.

Secret-bearing settings (the database URL, the Supabase service key, the JWT
secret) take either the value itself or a reference to where it is kept
(``tether.aws.secrets``), resolved on first use.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tether import limits
from tether.errors import ConfigurationError

Seconds = Annotated[float, Field(ge=0)]


ENV_PREFIX = "TETHER_"

OPERATOR_KEY_MIN_LENGTH = 16
# RFC 7518 3.2: an HS256 key is at least the hash's size, 256 bits; a shorter one can be
# found offline from one token (Supabase's legacy secrets are 32 characters or more).
JWT_SECRET_MIN_BYTES = 32


def operator_key_problem(key: str) -> str | None:
    """What makes a key unfit for the operators' API, or None. Never quotes the key."""
    if len(key) < OPERATOR_KEY_MIN_LENGTH:
        return f"must be at least {OPERATOR_KEY_MIN_LENGTH} characters"
    if key != key.strip() or not all(" " <= character <= "~" for character in key):
        # HTTP carries a header's bytes as Latin-1, so a key of other characters could
        # never be sent as typed; spaces around a header's value are trimmed.
        return (
            "must be printable ASCII (letters, digits, punctuation, spaces between them),"
            " with no space at either end"
        )
    from tether.auth import looks_like_jwt  # noqa: PLC0415 - only where a key is set

    if looks_like_jwt(key):
        # Sent as a Bearer, it would be verified as an access token and never compared.
        return "must not look like an access token (three parts, dot-separated, 'ey' first)"
    return None


def jwt_secret_problem(secret: str) -> str | None:
    """What makes an HS256 secret unfit to verify tokens with, or None. Never quotes it."""
    if len(secret.encode()) < JWT_SECRET_MIN_BYTES:
        return (
            f"must be at least {JWT_SECRET_MIN_BYTES} bytes (256 bits, as HS256 requires):"
            " a shorter secret can be guessed from any token it signed"
        )
    return None


_SECRET_PROBLEMS = {"operator_key": operator_key_problem, "jwt_secret": jwt_secret_problem}
"""Each secret setting's check of a value given as it is (a reference is checked once read)."""


def read_checked_secret(
    settings: Settings, field: Literal["operator_key", "jwt_secret"]
) -> str | None:
    """A secret setting's value, read from where it names when it is a reference, and
    checked as a value given as it is (``_SECRET_PROBLEMS``); None when it is not set."""
    given: str | None = getattr(settings, field)
    if not given:
        return None
    from tether.aws.secrets import resolve_setting  # noqa: PLC0415 - boto3 only for a reference

    name = f"TETHER_{field.upper()}"
    value = resolve_setting(name, given, settings.aws_endpoint_url)
    # A reference is checked here, once read; a value was checked with the settings.
    problem = _SECRET_PROBLEMS[field](value)
    if problem:
        raise ConfigurationError(f"{name} {problem}")
    return value


class Settings(BaseModel):
    # nan broke whichever bound was checked first ("at most 1d" said of nan), and inf
    # (1e309 reads as it) stood for a time: neither is a number of seconds.
    model_config = ConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    # The secrets are left out of the settings' repr (and str): an application that logs
    # or prints its settings, or a traceback's locals, would show them whole.
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TETHER_DATABASE_URL", "DATABASE_URL"),
        repr=False,
    )
    supabase_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TETHER_SUPABASE_URL", "SUPABASE_URL")
    )
    supabase_service_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TETHER_SUPABASE_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"
        ),
        repr=False,
    )

    jwks_url: str | None = None
    """Where the project's signing keys are published; default from SUPABASE_URL."""
    jwt_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TETHER_JWT_SECRET", "SUPABASE_JWT_SECRET"),
        repr=False,
    )
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None
    """Expected ``iss``; default ``<SUPABASE_URL>/auth/v1``."""
    allowed_roles: str = "authenticated"
    """Comma-separated token roles that may connect; others get 403."""
    allow_anonymous: bool = False
    jwt_leeway_seconds: Annotated[float, Field(ge=0, le=300)] = 5.0
    """Clock skew allowed when checking exp, iat and nbf."""
    jwks_cache_seconds: Annotated[float, Field(ge=1, le=86400)] = 300.0
    """PyJWT keeps the key set for whole seconds, at least one."""
    jwks_refresh_cooldown_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """Least time between refetches forced by unknown key ids (a flood of them costs one)."""
    jwks_timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 3.0
    """The time one fetch of the key set gets in all (resolving the issuer's name,
    connecting, the headers, the body); past it the issuer counts as unreachable. At most
    5 s: a handshake waits for it, within $connect's 10 s, with the database still to
    answer."""

    announce_to: Literal["eventbridge", "log"] = "eventbridge"
    """Where SessionEnded goes: EventBridge, or (local runs) a structured log line."""
    event_bus_name: str = "default"
    event_source: str = "tether"

    heartbeat_interval_seconds: Annotated[float, Field(gt=0, le=limits.SILENCE_MAX_SECONDS)] = (
        limits.HEARTBEAT_INTERVAL_SECONDS
    )
    """How often clients are asked to send {"action": "heartbeat"} (told in every reply)."""
    heartbeat_throttle_seconds: Annotated[
        float, Field(ge=0, le=limits.HEARTBEAT_THROTTLE_MAX_SECONDS)
    ] = 10.0
    """At most one last_seen_at write per connection per this long; under the interval."""
    announce_lease_seconds: Annotated[float, Field(ge=0, le=limits.LEASE_MAX_SECONDS)] = 60.0
    finalizer: str = "tether.handlers.session_ended:log_finalizer"
    finalize_lease_seconds: Annotated[float, Field(gt=0, le=limits.LEASE_MAX_SECONDS)] = 300.0
    """How long a SessionEnded delivery holds its session while the finalizer runs, when
    the handler has no Lambda context to say its time left; with one, the claim is that
    time and a margin (tether.handlers.session_ended), so a retry after a timeout finds
    the session free."""

    # The sweep. API Gateway closes a connection after 10 minutes idle and after
    # 2 hours in all; the grace covers clock skew and the heartbeat throttle.
    idle_timeout_seconds: Annotated[float, Field(gt=0, le=limits.GATEWAY_IDLE_TIMEOUT_SECONDS)] = (
        limits.GATEWAY_IDLE_TIMEOUT_SECONDS
    )
    max_duration_seconds: Annotated[
        float, Field(gt=0, le=limits.GATEWAY_MAX_CONNECTION_SECONDS)
    ] = limits.GATEWAY_MAX_CONNECTION_SECONDS
    limit_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    suspect_after_seconds: Annotated[float, Field(ge=0, le=limits.SILENCE_MAX_SECONDS)] = 20.0
    """Ask the gateway about sessions silent this long (0: every live session, every check)."""
    heartbeat_grace_seconds: Annotated[float, Field(gt=0, le=limits.SILENCE_MAX_SECONDS)] | None = (
        30.0
    )
    """Clients silent this long are disconnected (heartbeat_timeout); "off" to not require
    heartbeats, leaving silent clients to API Gateway's idle timeout."""
    gone_settle_seconds: Annotated[float, Field(ge=0, le=limits.LEASE_MAX_SECONDS)] = 5.0
    """A connection the gateway calls gone is ended as gone only after this long, so a
    $disconnect on its way keeps its reason."""
    suspect_lease_seconds: Annotated[float, Field(gt=0, le=limits.LEASE_MAX_SECONDS)] = 30.0
    """How long an overlapping sweep leaves a suspect to the sweep asking about it (at
    most one check period)."""
    sweep_schedule_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """How often the sweep is scheduled (EventBridge: once a minute at most)."""
    sweep_check_every_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    """How often a scheduled run checks, for as long as its period lasts."""
    sweep_batch_size: Annotated[int, Field(ge=1, le=limits.BATCH_SIZE_MAX)] = 500
    sweep_concurrency: Annotated[int, Field(ge=1, le=128)] = 16
    sweep_time_margin_seconds: Annotated[float, Field(ge=0, le=900)] = 10.0
    connections_endpoint: str | None = None
    """The @connections endpoint (https://{api}.execute-api.{region}.amazonaws.com/{stage})."""

    aws_endpoint_url: str | None = None
    """Send AWS API calls (EventBridge, secrets) here: moto or a local stack."""

    # The operators' API (tether.admin).
    operator_key: str | None = Field(default=None, repr=False)
    """A static key for the operators' API, or where it is kept (a secret reference)."""
    operator_roles: str = "service_role"
    """Comma-separated token roles that make an operator."""
    operator_claim: str | None = "app_metadata.tether_operator"
    """A claim (dotted path) that makes a token's user an operator when it is true."""

    @field_validator("supabase_url", "jwks_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        # PyJWT fetches keys over http(s) only; anything else failed every $connect.
        if value is None or not value.strip():
            return None
        try:
            parts = urlsplit(value.strip())
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL, such as https://<project>.supabase.co")
        return value.strip()

    @field_validator("connections_endpoint", "aws_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        from tether.aws.clients import endpoint_url_problem  # noqa: PLC0415
        from tether.aws.connections import endpoint_problem  # noqa: PLC0415

        check = (
            endpoint_problem if info.field_name == "connections_endpoint" else endpoint_url_problem
        )
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value.strip()

    @field_validator("jwt_audience", "event_bus_name", "event_source", "finalizer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # A blank one (an .env template's) refused every token, or failed every
        # announcement or finalizer, long after the start that could have said so.
        if not value.strip():
            raise ValueError("is empty: give a value, or leave it unset for the default")
        return value

    @field_validator("allowed_roles")
    @classmethod
    def _some_role(cls, value: str) -> str:
        if not any(role.strip() for role in value.split(",")):
            raise ValueError(
                "names no role, so every token would be refused: give the roles that may"
                " connect (comma-separated), or leave it unset for authenticated"
            )
        return value

    @field_validator("operator_key", "jwt_secret")
    @classmethod
    def _secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        from tether.aws.secrets import is_reference  # noqa: PLC0415

        if is_reference(value):
            # Checked once read (tether.admin.auth, tether.auth.verifier_for).
            return value
        problem = _SECRET_PROBLEMS[info.field_name or ""](value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("heartbeat_grace_seconds", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            # A blank one (an .env template's) would drop the bound without a word.
            raise ValueError(
                "is empty: give a number of seconds, or off to not require heartbeats,"
                " or leave it unset for the default"
            )
        if isinstance(value, str) and value.strip().lower() in {"off", "none"}:
            return None
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                # pydantic's own message would not say that "off" is the other choice.
                raise ValueError(f"a number of seconds, or off; got {value.strip()!r}") from None
        return value

    @model_validator(mode="after")
    def _heartbeats_agree(self) -> Settings:
        # Named as the environment names them; a command renames its flags' settings.
        interval = self.heartbeat_interval_seconds
        if self.heartbeat_throttle_seconds >= interval:
            raise ValueError(
                f"TETHER_HEARTBEAT_THROTTLE_SECONDS ({self.heartbeat_throttle_seconds:g}) must be"
                f" under TETHER_HEARTBEAT_INTERVAL_SECONDS ({interval:g}), or heartbeats would"
                " not all count"
            )
        grace = self.heartbeat_grace_seconds
        if grace is not None and grace <= interval:
            raise ValueError(
                f"TETHER_HEARTBEAT_GRACE_SECONDS ({grace:g}) must be more than"
                f" TETHER_HEARTBEAT_INTERVAL_SECONDS ({interval:g}), or live clients would be"
                " cut off"
            )
        return self

    @property
    def issuer(self) -> str | None:
        if self.jwt_issuer:
            return self.jwt_issuer
        if self.supabase_url:
            return self.supabase_url.rstrip("/") + "/auth/v1"
        return None

    @property
    def signing_keys_url(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        if self.supabase_url and not self.jwt_secret:
            return self.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"
        return None

    @property
    def role_allow_list(self) -> frozenset[str]:
        return frozenset(role.strip() for role in self.allowed_roles.split(",") if role.strip())

    @property
    def operator_role_set(self) -> frozenset[str]:
        return frozenset(role.strip() for role in self.operator_roles.split(",") if role.strip())

    def require_store(self) -> None:
        if not self.database_url and not (self.supabase_url and self.supabase_service_key):
            raise ConfigurationError(
                "no database configured: set TETHER_DATABASE_URL (or DATABASE_URL), "
                "or SUPABASE_URL with TETHER_SUPABASE_SERVICE_KEY"
            )

    def require_authentication(self) -> None:
        if self.allow_anonymous:
            return
        if not self.jwt_secret and not self.signing_keys_url:
            raise ConfigurationError(
                "no token verification configured: set TETHER_JWKS_URL (or SUPABASE_URL) "
                "for signing keys, or TETHER_JWT_SECRET for a legacy HS256 project, "
                "or TETHER_ALLOW_ANONYMOUS=true"
            )
        if not self.issuer:
            raise ConfigurationError(
                "no token issuer configured: set TETHER_JWT_ISSUER (or SUPABASE_URL)"
            )


# Bounds on a duration, in the words its flags and settings take (10m, not 600).
_BOUND_WORDS = {
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
}


def _duration_bound(item: Any) -> str | None:
    """A bound a duration setting broke, said as a duration: "at most 10m (600 s)"."""
    if item.get("type") == "finite_number":
        return "a finite number, such as 15 (nan and infinities are none)"
    words = _BOUND_WORDS.get(str(item.get("type")))
    if words is None or not item.get("loc") or not str(item["loc"][-1]).endswith("_seconds"):
        return None
    bound = (item.get("ctx") or {}).get(words[0])
    if not isinstance(bound, int | float):
        return None
    from tether.durations import format_duration  # noqa: PLC0415 - only on a refusal

    if bound == 0:
        return f"{words[1]} 0"
    return f"{words[1]} {format_duration(float(bound))} ({bound:g} s)"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        message = _duration_bound(item) or str(item["msg"]).removeprefix("Value error, ")
        if item["loc"]:
            message = "TETHER_" + "_".join(str(p) for p in item["loc"]).upper() + f": {message}"
        parts.append(message)
    return "; ".join(parts)


def _environment_names(name: str) -> tuple[str, ...]:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (ENV_PREFIX + name,)


def from_environment(**overrides: Any) -> dict[str, Any]:
    """Each setting's raw value: given here, else from the environment (names compared
    without regard to case), else absent (its default applies)."""
    environment = {key.lower(): value for key, value in os.environ.items()}
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name in overrides:
            values[name] = overrides[name]
            continue
        for candidate in _environment_names(name):
            if candidate.lower() in environment:
                values[name] = environment[candidate.lower()]
                break
    return values


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.model_validate(from_environment(**overrides))
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {_describe(exc)}") from None
