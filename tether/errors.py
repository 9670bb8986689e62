"""Typed exceptions, and the one place where driver errors become them.

Handlers never look at error text: they catch these types, and
``tether.responses`` maps each to what the caller is told.
"""

from __future__ import annotations

import re
from typing import Any


class TetherError(Exception):
    """Base of every error tether raises on purpose."""


class InvalidInputError(TetherError):
    """The request itself is wrong (bad reason, bad bound, malformed event). Nothing was written."""


class PartlyDoneError(TetherError):
    """A command failed after some of its work was committed, and is kept: the message
    says what was done before what stopped it. Not a refusal of the input, whatever
    stopped it: the command line exits 1, not 2 (nothing done)."""


class NotFoundError(TetherError):
    """No such session (or other resource) by that id."""


class ConflictError(TetherError):
    """The request contradicts what is recorded (a connection id whose session ended)."""


class ConfigurationError(TetherError):
    """A setting is missing or malformed; the message names it. ``public`` is what a
    caller of the operators' API is told: the same, less what only the operator's logs
    should carry (a secret's reference names an account and a secret)."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


class DatabaseUnavailableError(TetherError):
    """The database could not be reached or dropped the connection."""


class DatabaseBusyError(DatabaseUnavailableError):
    """The database answered, but the call lost to another's hold on its rows: a lock
    not obtained within ``lock_timeout``, a deadlock, a serialization failure. Nothing
    was written, and another try may succeed."""


class DatabaseError(TetherError):
    """The database refused the call for a reason that is not the caller's input."""


class EmbeddedPostgresError(TetherError):
    """The embedded Postgres could not be started or stopped; the message carries
    initdb's or pg_ctl's own words."""


class MigrationError(TetherError):
    """A migration cannot be applied (edited after it was applied, or it failed)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) where the command knows what became of its work: the
    command line says ``said`` instead of "what it had done is kept", which is untrue of
    a run rolled back whole or of a stack CloudFormation goes on changing."""

    def __init__(self, what_became: str) -> None:
        super().__init__(what_became)
        self.what_became = what_became

    @property
    def said(self) -> str:
        return f"interrupted; {self.what_became}"


class InterruptedAtQuestion(Interrupted):
    """Ctrl-C (or SIGTERM) while a command waited for the answer to its question, which
    every command asks before it changes anything: taken as no."""

    def __init__(self) -> None:
        super().__init__("nothing was changed")

    @property
    def said(self) -> str:
        return "interrupted at the question, taken as no: nothing was changed"


class AdoptionError(TetherError):
    """A table cannot be adopted as it is, or a step of the adoption could not run;
    the message says what to do. Nothing of the failed step was kept."""


class AuthenticationError(TetherError):
    """No credentials, or credentials that do not verify. ``cause`` is safe to log."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class ForbiddenError(AuthenticationError):
    """Valid credentials that are not allowed to connect."""


class SigningKeysUnavailableError(TetherError):
    """The issuer's signing keys (its JWKS) could not be fetched: no token can be
    verified now, and nothing says the caller's is bad. Worth a retry."""


class SecretUnavailableError(TetherError):
    """Secrets Manager or SSM did not answer (a timeout, throttling, its own failure):
    nothing says the secret or the setting is wrong. Worth a retry."""


class GatewayError(TetherError):
    """The @connections API did not answer (throttled past retries, forbidden, down)."""


class FinalizerError(TetherError):
    """The configured SessionEnded finalizer failed."""


# SQLSTATE classes: 22 data exception, 23 integrity violation, 42 syntax or access
# rule (a missing function is a deploy problem, not bad input), 08 connection
# exception, 57 operator intervention (shutdown, statement cancelled), 53
# insufficient resources (too many connections).
_INPUT_CLASSES = frozenset({"22", "23"})
_UNAVAILABLE_CLASSES = frozenset({"08", "57", "53"})
# Transient: a lock not obtained within lock_timeout, a deadlock, a serialization
# failure. Worth a retry; nothing was written.
_BUSY_STATES = frozenset({"55P03", "40P01", "40001"})


# A function of tether's that is not there: the database was never migrated, or is
# migrated only part way (an older release, an adoption stopped before its migrations).
_NOT_MIGRATED = (
    " (tether's migrations are not all applied to this database: `tether migrate` applies"
    " them, or says what stops it)"
)
# Through PostgREST, also a schema cache older than the migrations.
_NOT_MIGRATED_OR_NOT_RELOADED = (
    " (tether's migrations are not all applied to this database, or PostgREST has not"
    " reloaded its schema since: `tether migrate` applies them, and"
    " `notify pgrst, 'reload schema'` reloads it)"
)


_TETHER_FUNCTION = re.compile(r"function (public\.tether_\w+)\(")


def error_for_sqlstate(sqlstate: str | None, message: str) -> TetherError:
    """Map a Postgres SQLSTATE (from psycopg or PostgREST) to a tether error."""
    klass = (sqlstate or "")[:2]
    if klass in _INPUT_CLASSES:
        return InvalidInputError(message)
    if sqlstate in _BUSY_STATES:
        return DatabaseBusyError(message)
    if klass in _UNAVAILABLE_CLASSES:
        return DatabaseUnavailableError(message)
    missing = _TETHER_FUNCTION.search(message) if sqlstate == "42883" else None
    if missing:
        # Its name, not Postgres's whole signature of the call (p_limit => smallint ...).
        return DatabaseError(f"this database has no {missing.group(1)}{_NOT_MIGRATED}")
    # A client-side error has no SQLSTATE: its message alone, not "unknown: ...".
    return DatabaseError(f"{sqlstate}: {message}" if sqlstate else message)


def error_from_psycopg(exc: Exception) -> TetherError:
    """Map a psycopg exception (imported lazily: supabase-py deployments never load psycopg)."""
    import psycopg  # noqa: PLC0415

    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        # libpq's connection failures run over lines (a hint after a tab): one line
        # reads the same in a terminal and a log.
        return DatabaseUnavailableError(" ".join(str(exc).split()) or type(exc).__name__)
    if isinstance(exc, psycopg.Error):
        diag_message = exc.diag.message_primary or str(exc)
        return error_for_sqlstate(exc.sqlstate, diag_message)
    return DatabaseError(str(exc))


# PostgREST's group 0: it could not reach the database (PGRST000 to PGRST003, the last
# a request that timed out waiting for a pooled connection), answered 503 or 504.
_POSTGREST_UNAVAILABLE = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
# A gateway's outage statuses (Cloudflare's 520 to 524 among them): with no PostgREST
# body (a proxy's error page), supabase-py gives the status as the code.
_GATEWAY_STATUSES = frozenset({502, 503, 504, 520, 521, 522, 523, 524})
_UNAVAILABLE_CODES = _POSTGREST_UNAVAILABLE | {str(status) for status in _GATEWAY_STATUSES}


# Too many requests: Supabase's or a proxy's rate limit refused the call before the
# database saw it. Nothing was written, and a later try may pass.
_RATE_LIMITED = 429
# The service key refused: Supabase's gateway answers 401 ("Invalid API key"), PostgREST
# its JWT errors (PGRST301 to PGRST303). The database cannot be reached with it, as a
# password refused is read through psycopg: the same alarms (DisconnectFailed) fire.
_KEY_REFUSED = 401
_KEY_REFUSED_CODES = frozenset({"PGRST301", "PGRST302", "PGRST303"})


def error_from_postgrest(
    payload: dict[str, Any], *, status: int | None = None, retry_after: str | None = None
) -> TetherError:
    """Map a PostgREST error body (``{"code", "message", ...}``), and the HTTP status it
    came with where known: a proxy's outage answers in a body of its own. ``retry_after``
    is the answer's Retry-After header, said only when it is a number of seconds."""
    found = payload.get("code")
    code = found if isinstance(found, str) else None  # a body's code may be any JSON
    message = str(payload.get("message") or "request refused by PostgREST")
    if status == _RATE_LIMITED:
        wait = (
            f"; it asks for {retry_after}s before another try"
            if retry_after and retry_after.isdigit() and len(retry_after) <= 6
            else ""
        )
        return DatabaseUnavailableError(f"429: rate limited ({message}){wait}")
    if status == _KEY_REFUSED or code in _KEY_REFUSED_CODES:
        return DatabaseUnavailableError(
            f"{code or status}: {message}: the service key was refused"
            " (check TETHER_SUPABASE_SERVICE_KEY)"
        )
    if status in _GATEWAY_STATUSES or code in _UNAVAILABLE_CODES:
        return DatabaseUnavailableError(f"{code or status}: {message}")
    # PostgREST's other errors start with PGRST; PGRST202 is a function it cannot find.
    if code is not None and code.startswith("PGRST"):
        missing = (
            _NOT_MIGRATED_OR_NOT_RELOADED
            if code == "PGRST202" and "function public.tether_" in message
            else ""
        )
        return DatabaseError(f"{code}: {message}{missing}")
    return error_for_sqlstate(code, message)
