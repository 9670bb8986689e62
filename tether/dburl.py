"""Database URLs: checked before use, and never shown with their password.

libpq echoes a URL it cannot parse, password included, in its error message;
every message that may carry one goes through ``scrub`` before it is logged,
printed or raised.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from tether.errors import ConfigurationError, DatabaseUnavailableError, error_from_psycopg

SCHEMES = ("postgresql://", "postgres://")
# A password runs to the last '@' before a space, '/' included: libpq echoes a URL whose
# password holds a raw '/' (it reads the part before it as a host and port). Not in a
# web URL, whose user part ends at the first '/' (_USER_PART_IN_WEB_URL hides it): there
# a port and a path holding an '@' (API Gateway's /@connections/) are no password.
_PASSWORD_IN_URL = re.compile(
    r"(?P<head>(?<![a-z])(?!(?:https?|wss?)://)[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)"
    r"(?P<secret>[^@\s]+)@",
    re.I,
)
# Quoted, the value may hold spaces; in a Python repr of text that holds both kinds of
# quote, its quotes are escaped (\'a b\').
_PASSWORD_IN_CONNINFO = re.compile(
    r"(?P<head>\bpassword\s*=\s*)"
    r"(?P<secret>\\'(?:[^'\\]|\\\\\\'|\\\\)*\\'|'(?:[^'\\]|\\.)*'|\S+)",
    re.I,
)
HIDDEN = "***"
# A web URL's user part (``https://TOKEN@host``, ``https://TOKEN:x-oauth-basic@host``) is
# how tokens ride in URLs for git hosts and webhooks: all of it is hidden. A database
# URL's user alone is a role name, and stays.
_USER_PART_IN_WEB_URL = re.compile(r"(?P<head>\b(?:https?|wss?)://)[^/?#@\s]+@", re.I)
# A web URL's password, where its user stays (redact: a URL the user gave, shown back):
# up to the first '@', '/' included (a password may hold one raw), unless what follows
# the ':' is a port (digits, then the path), as in http://127.0.0.1:3001/local/@connections.
_PASSWORD_IN_WEB_URL = re.compile(
    r"(?P<head>(?<![a-z])(?:https?|wss?)://[^:/?#@\s]*:)(?![0-9]+(?:[/?#\s'\"]|$))"
    r"(?P<secret>[^@\s]*?)@",
    re.I,
)
_JWT = re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*")
_TOKEN_PARAMETER = re.compile(
    r"(?P<head>[?&](?:token|access_token|id_token|apikey|api_key|key|secret|client_secret"
    r"|password|sig|signature|auth)=)[^&\s\"']+",
    re.I,
)
# A query string on a line of its own, as a signed request's canonical form logs it:
# only the names that are never anything but credentials, and a value as long as one
# (so that `key=line` in a traceback's source line stays legible).
_TOKEN_ALONE = re.compile(
    r"(?P<head>(?<!\S)(?:token|access_token|id_token|apikey|api_key|client_secret"
    r"|password|signature)=)[^&\s\"']{8,}",
    re.I,
)
# A bearer credential that is no JWT (an opaque API key, sb_secret_...): the JWT pattern
# below would pass it over. As long as a credential is: not a word of prose, nor a
# placeholder (<key>), nor one already hidden.
_BEARER = re.compile(r"(?P<head>\bBearer[ \t]+)[A-Za-z0-9._~+/=-]{16,}", re.I)
# What botocore logs at debug level of a signed request: the session token (a header,
# and a line of the canonical request) and the signature.
_AWS_CREDENTIAL = re.compile(
    r"(?P<head>x-amz-security-token['\"]?\s*[:=]\s*(?:b?['\"])?|Signature=)[^'\"\s,}&]+", re.I
)


def check(url: str) -> str:
    """The URL, stripped, if it is a Postgres URL; else a ConfigurationError that
    names what is wrong without repeating the URL."""
    cleaned = url.strip()
    if not cleaned:
        raise ConfigurationError("the database URL is empty")
    if cleaned.lower().startswith(SCHEMES):
        if _at_in_host(cleaned):
            # libpq and Python split such a URL at different '@'s: the server would be
            # asked for part of the password as its host name, and say so in its error.
            raise ConfigurationError(
                "the database URL has more than one '@' before its host: write an '@' in the"
                " user name or password as %40"
            )
        return _readable(cleaned)
    head = cleaned.split("://", 1)[0] if "://" in cleaned else None
    # A scheme is what comes before "://" when nothing there is a key=value pair's
    # (host=db password=a://b is a connection string, and its text is not repeated).
    scheme = head if head is not None and not re.search(r"[=\s]", head) else None
    if scheme is not None:
        raise ConfigurationError(
            f"the database URL must start with postgresql:// or postgres://, not {scheme[:20]}://"
        )
    if "=" in cleaned:
        return _readable(cleaned)  # a libpq key=value connection string
    # The example names no password in URL form: scrubbed, it would read user:***@host.
    raise ConfigurationError(
        "the database URL must look like postgresql://user@host:5432/dbname (with"
        " user:password@host where it needs a password)"
    )


_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _readable(conninfo: str) -> str:
    """The connection string, if libpq can read it and its port and sslmode are values
    libpq takes: else refused now, as bad input, rather than failing to connect later
    as if the database were down. Nothing given is repeated (a password may be in it)."""
    from psycopg import ProgrammingError  # noqa: PLC0415 - only the commands check URLs
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        params = conninfo_to_dict(conninfo)
    except UnicodeDecodeError:
        # A %-escape of another encoding's byte (Latin-1's %E9 for é), or one cut short:
        # psycopg raises it bare, and argparse would repeat the URL it was given.
        raise ConfigurationError(
            "the database URL has a %-escape that is not UTF-8: write each character"
            " outside ASCII as the %XX of its UTF-8 bytes (é is %C3%A9)"
        ) from None
    except ProgrammingError:
        unknown, after_password = _unknown_query_parameters(conninfo)
        if unknown:
            # An ORM's URL (Prisma's ?pgbouncer=true) is the usual way to meet one.
            which, them = ("a parameter", "it") if len(unknown) == 1 else ("parameters", "them")
            raise ConfigurationError(
                f"the database URL has {which} Postgres's clients do not take:"
                f" {', '.join(unknown)} (an ORM's setting?): remove {them}"
            ) from None
        if after_password:
            # Said without "password=": what follows it would be hidden as a password.
            raise ConfigurationError(
                "the database URL has a parameter Postgres's clients do not take after its"
                " password parameter (not named: it may be the rest of the password; write"
                " an '&' in the password as %26)"
            ) from None
        raise ConfigurationError(
            "the database URL cannot be read (a quote or an escape out of place?)"
        ) from None
    for port in str(params.get("port") or "").split(","):
        # One port per host; an empty one is the default (5432).
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigurationError("the database URL's port must be a number from 1 to 65535")
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in _SSL_MODES:
        raise ConfigurationError(
            f"the database URL's sslmode must be one of {', '.join(_SSL_MODES)}"
        )
    return conninfo


def _unknown_query_parameters(url: str) -> tuple[list[str], bool]:
    """The names in a URL's query string that libpq does not know (the names alone,
    never their values: one may be a password), and whether one follows a ``password``
    parameter: a raw '&' in its value (``?password=a&b``) makes the rest of the password
    look like a name, so none after it is named."""
    from psycopg import pq  # noqa: PLC0415

    # After the last '@': a password may hold a '?' (and what looks like a name).
    after_credentials = url.rsplit("@", 1)[-1]
    if not url.lower().startswith(SCHEMES) or "?" not in after_credentials:
        return [], False
    known = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    query = after_credentials.split("?", 1)[1]
    names = [unquote(pair.split("=", 1)[0]) for pair in query.split("&") if pair]
    named: list[str] = []
    password_seen = False
    for name in names:
        if name == "password":
            password_seen = True
        elif name not in known:
            if password_seen:
                return named, True
            if re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name):
                named.append(f"?{name}")
    return named, False


def _at_in_host(url: str) -> bool:
    """Whether libpq would read an '@' as part of the host: it takes the user and
    password up to the first '@' before any '/', and the hosts from there to a '/' or
    a '?'."""
    head = url.split("://", 1)[1].split("/", 1)[0]
    if "@" not in head:
        return False
    return "@" in head.split("@", 1)[1].split("?", 1)[0]


def passwords(url: str) -> list[str]:
    """The password(s) a URL or connection string carries, raw and decoded."""
    found: list[str] = []
    for pattern in (_PASSWORD_IN_URL, _PASSWORD_IN_CONNINFO):
        for match in pattern.finditer(url):
            secret = match.group("secret").strip("'")
            if secret:
                found.extend({secret, unquote(secret)})
    try:
        parsed = urlsplit(url.strip())
        if parsed.password:
            found.append(parsed.password)
    except ValueError:
        pass
    return [each for each in found if each]


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    hidden = _PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}{HIDDEN}@", url)
    hidden = _PASSWORD_IN_WEB_URL.sub(lambda m: f"{m.group('head')}{HIDDEN}@", hidden)
    return _PASSWORD_IN_CONNINFO.sub(lambda m: f"{m.group('head')}{HIDDEN}", hidden)


def scrub(message: str, url: str | None) -> str:
    """A message with the URL's password (and any URL-shaped password) hidden.

    The URL's own passwords go first, longest first: a password holding an ``@``
    (``u:p@ss@h``) would otherwise be cut at its first ``@`` by ``redact``, and its
    tail left in view."""
    text = message
    if url:
        for secret in sorted(set(passwords(url)), key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, HIDDEN)
        text = text.replace(url, redact(url)).replace(url.strip(), redact(url.strip()))
    return redact(text)


def hide_secrets(text: str) -> str:
    """Text with passwords in URLs, a web URL's user part, access tokens (JWTs), token
    query parameters and AWS session tokens and signatures hidden: for lines logged by
    libraries that do not know what they carry."""
    hidden = _USER_PART_IN_WEB_URL.sub(lambda m: f"{m.group('head')}{HIDDEN}@", text)
    hidden = _TOKEN_PARAMETER.sub(lambda m: f"{m.group('head')}{HIDDEN}", redact(hidden))
    hidden = _AWS_CREDENTIAL.sub(lambda m: f"{m.group('head')}{HIDDEN}", hidden)
    hidden = _TOKEN_ALONE.sub(lambda m: f"{m.group('head')}{HIDDEN}", hidden)
    hidden = _BEARER.sub(lambda m: f"{m.group('head')}{HIDDEN}", hidden)
    return _JWT.sub(HIDDEN, hidden)


def unreachable(exc: Exception, url: str | None) -> DatabaseUnavailableError:
    """A failed connection to ``url``, said as every command says it; libpq's words may
    echo the URL it was given, password and all, and are scrubbed of it."""
    reason = scrub(str(error_from_psycopg(exc)), url)
    return DatabaseUnavailableError(f"cannot connect to the database: {reason}")
