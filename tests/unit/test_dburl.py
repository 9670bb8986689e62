"""Database URLs are checked before use and never shown with their password."""

from __future__ import annotations

import pytest

from tether.dburl import check, hide_secrets, redact, scrub
from tether.errors import ConfigurationError

URL = "postgresql://app:s3cr%40t-pw@db.example.com:6543/postgres?sslmode=require"


def test_a_postgres_url_passes_stripped() -> None:
    assert check(f"  {URL}\n") == URL
    assert check("postgres://u@h/db") == "postgres://u@h/db"
    assert check("host=/tmp dbname=x") == "host=/tmp dbname=x"
    # Several hosts, each with its port (or the default), as libpq takes them.
    for url in (
        "postgresql://u@h1:5432,h2:5433/db",
        "postgresql://u@h1:5432,h2/db?sslmode=require",
    ):
        assert check(url) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgress://app:hunter2pass@h/db", "not postgress://"),
        ("mysql://app:hunter2pass@h/db", "not mysql://"),
        ("https://app:hunter2pass@h/db", "not https://"),
        ("just-a-word", "postgresql://user@host"),
        ("   ", "empty"),
        # Values libpq would refuse only when connecting, as if the database were down.
        ("postgresql://app:hunter2pass@h:notaport/db", "port must be a number from 1 to"),
        ("postgresql://app:hunter2pass@h:99999/db", "port must be a number from 1 to"),
        ("postgresql://app:hunter2pass@h/db?port=0", "port must be a number from 1 to"),
        ("host=h port=x password=hunter2pass", "port must be a number from 1 to"),
        ("postgresql://app:hunter2pass@h/db?sslmode=bogus", "sslmode must be one of"),
        ("host=h password='hunter2pass", "cannot be read"),
        # An ORM's parameter is no misplaced quote: it is named, so it can be removed.
        ("postgresql://app:hunter2pass@h:6543/db?pgbouncer=true", r"do not take: \?pgbouncer \("),
        (
            "postgresql://app:hunter2pass@h/db?sslmode=require&connection_limit=1",
            r"do not take: \?connection_limit \(",
        ),
        # A '?' in the password is no query: nothing of it is named.
        ("postgresql://app:p?hunter2pass=x@h/db?pgbouncer=true", r"take: \?pgbouncer \("),
        # A %-escape that is no UTF-8 (Latin-1's é, one cut short) is no crash.
        ("postgresql://app:hunter2pass%E9@h/db", "not UTF-8"),
        ("postgresql://app@h/db?password=hunter2pass%C3", "not UTF-8"),
        # A raw '&' in a ?password= cuts it: the rest is no parameter's name to repeat.
        ("postgresql://app@h/db?password=Pa&hunter2pass", r"its password parameter \(not named"),
        ("postgresql://app@h/db?password=Pa&hunter2pass=x", r"its password parameter \(not named"),
        (
            "postgresql://app@h/db?pgbouncer=true&password=Pa&hunter2pass",
            r"take: \?pgbouncer \(",
        ),
    ],
)
def test_other_urls_are_refused_without_echoing_them(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as refused:
        check(url)
    assert "hunter2pass" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2pass@prod@db.internal.invalid:5432/app",
        "postgresql://bob:Pa@ss:w0rdhunter2pass@127.0.0.1/db",
        "postgres://a@b:hunter2pass@h",
        "postgresql://u:hunter2pass?a@prod@h/db",
        "postgresql://u:hunter2pass#a@prod@h/db",
    ],
)
def test_an_unescaped_at_before_the_host_is_refused(url: str) -> None:
    """libpq would take part of the password for the host, and name it in its error."""
    with pytest.raises(ConfigurationError, match="%40") as refused:
        check(url)
    for part in ("hunter2pass", "prod", "ss:w0rd"):
        assert part not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h/db?application_name=a@b",
        "postgresql://u:p@h?application_name=a@b",
        "postgresql://u:p%40ss@[::1]:5432,h2:5433/db",
        "host=h user=a@b password=p@ss",
    ],
)
def test_an_at_outside_the_host_is_not_counted(url: str) -> None:
    assert check(url) == url


def test_redact_hides_the_password_only() -> None:
    assert redact(URL) == "postgresql://app:***@db.example.com:6543/postgres?sslmode=require"
    assert redact("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert redact("postgresql://app@h/db") == "postgresql://app@h/db"
    # No password to hide (a local trust server's URL): no *** pretending there is one.
    assert redact("postgresql://postgres:@/postgres?host=/run/pg") == (
        "postgresql://postgres:@/postgres?host=/run/pg"
    )


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=h password='pw one two' user=u",
        "host=h password='pw\\'one two' user=u",
        "host=h password='pw one two\\\\' user=u",
    ],
)
def test_a_quoted_password_is_hidden_whole_in_a_repr(conninfo: str) -> None:
    # A traceback or a logged object shows text as its repr: holding both kinds of quote,
    # the password's quotes come escaped.
    shown = redact(repr(f'it said "no" for {conninfo}'))
    for word in ("pw", "one", "two"):
        assert word not in shown, shown
    assert "user=u" in shown


def test_scrub_removes_the_password_wherever_libpq_echoed_it() -> None:
    message = f'missing "=" after "{URL}" in connection info string'
    cleaned = scrub(message, URL)
    assert "s3cr%40t-pw" not in cleaned
    assert "s3cr@t-pw" not in scrub("password s3cr@t-pw rejected", URL)
    # A password with an unescaped @, which libpq reads up to the last @ of the netloc.
    with_at = "postgresql://app:p4ss@w0rd@db.example.com/postgres"
    for shown in (f'could not parse "{with_at}"', "authentication failed for p4ss@w0rd"):
        cleaned = scrub(shown, with_at)
        assert "p4ss" not in cleaned and "w0rd" not in cleaned, cleaned
    assert "***" in cleaned


@pytest.mark.parametrize(
    "line",
    [
        # botocore at debug level: the prepared request's headers, the canonical request,
        # and a presigned URL.
        "headers={'X-Amz-Security-Token': b'IQoJb3JpZ2luX2VjSECRET//wEaCXVz', 'Authorization':"
        " b'AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261129/us-east-1/s3/aws4_request,"
        " SignedHeaders=host, Signature=SECRETf2b1c9d8e7a'}",
        "x-amz-security-token:FwoGZXIvYXdzSECRET//////wEaDN\nx-amz-date:20261129T000000Z",
        "https://s3.amazonaws.com/b/k?X-Amz-Security-Token=FwoSECRET%2F&X-Amz-Signature=SECRETab",
    ],
)
def test_aws_session_tokens_and_signatures_are_hidden(line: str) -> None:
    hidden = hide_secrets(line)
    assert "SECRET" not in hidden
    assert "x-amz" in hidden.lower()  # what was there stays legible


@pytest.mark.parametrize(
    "parameter", ["token", "api_key", "secret", "client_secret", "password", "sig", "auth"]
)
def test_secret_query_parameters_are_hidden(parameter: str) -> None:
    hidden = hide_secrets(f"GET https://gw.example/p?a=1&{parameter}=SECRETvalue&b=2 failed")
    assert "SECRETvalue" not in hidden
    assert "a=1" in hidden


@pytest.mark.parametrize(
    "line",
    [
        "Client error '401 Unauthorized' for url 'https://ghp_SECRETtoken@api.example.com/hook'",
        "POST HTTPS://SECRETkey@hooks.example.com/x failed",
        "cannot reach wss://SECRET0123@push.example.com",
        # A token with a password part: the token is the secret, not only what follows.
        "git clone https://ghp_SECRETtoken:x-oauth-basic@git.example.com/o/r failed",
        "POST https://SECRETtoken:@api.example.com/x failed",
    ],
)
def test_a_web_urls_user_part_is_hidden(line: str) -> None:
    hidden = hide_secrets(line)
    assert "SECRET" not in hidden
    assert "example.com" in hidden  # the host stays legible


def test_a_database_urls_user_name_alone_stays() -> None:
    line = 'connection to "postgresql://postgres@db.example.com:5432/app" failed'
    assert hide_secrets(line) == line


@pytest.mark.parametrize(
    "line",
    [
        # botocore on a local @connections endpoint: a port, then a path with an '@'.
        'Could not connect to the endpoint URL: "http://127.0.0.1:47299/local/@connections/a="',
        "POST https://abc.execute-api.eu-west-1.amazonaws.com:443/prod/@connections/a= failed",
        "ws://localhost:3001/@connections closed",
    ],
)
def test_a_web_urls_port_and_path_stay_legible(line: str) -> None:
    """The port and stage are what an operator needs to see why the endpoint failed:
    they were hidden as if they were a password."""
    assert hide_secrets(line) == line


def test_a_database_password_holding_a_slash_is_still_hidden() -> None:
    line = (
        'invalid integer value "pa" for connection option "port" in postgresql://u:pa/SECRET@h/db'
    )
    assert "SECRET" not in hide_secrets(line)
    assert "SECRET" not in redact("postgresql://u:pa/SECRET@h/db")


@pytest.mark.parametrize(
    "line",
    [
        "--jwks-url: an https:// address is expected, got 'http://user:SECRET@example.com/jwks'",
        "cannot reach wss://user:SECRET@push.example.com:443/prod/@connections/a=",
    ],
)
def test_a_web_urls_password_is_hidden_by_scrub_and_redact(line: str) -> None:
    """What a command says of a URL it was given goes through scrub: a web URL's
    password is hidden there too, not only in library logs."""
    for hidden in (scrub(line, None), redact(line)):
        assert "SECRET" not in hidden
        assert "user:***@" in hidden


@pytest.mark.parametrize("glued", ["1", "-", ".", "+", "("])
def test_a_database_url_glued_to_what_comes_before_it_is_still_hidden(glued: str) -> None:
    line = f"bad value {glued}postgresql://u:SECRET@h/db"
    assert "SECRET" not in hide_secrets(line)
    assert "SECRET" not in scrub(line, None)


@pytest.mark.parametrize(
    "line",
    [
        "GET https://user:pa/SECRET@example.com/jwks failed",
        "GET https://user:pa?SECRET@example.com/jwks failed",
        "GET https://user:pa#SECRET@example.com/jwks failed",
    ],
)
def test_a_web_password_holding_a_raw_slash_is_hidden(line: str) -> None:
    assert "SECRET" not in hide_secrets(line)
    assert "SECRET" not in scrub(line, None)


@pytest.mark.parametrize(
    "text",
    [
        # A signed request's canonical form logs its query string on a line of its own.
        "GET\n/local/@connections/k7a\ntoken=SECRETvalue\nhost:127.0.0.1:1",
        "token=SECRETvalue",
        # An opaque API key as a bearer: no JWT, so that pattern passed it over.
        "Authorization: Bearer sb_secret_SECRETvalue",
        "headers={'authorization': 'bearer SECRETvalue0123456789'}",
    ],
)
def test_a_token_alone_on_its_line_or_as_an_opaque_bearer_is_hidden(text: str) -> None:
    hidden = hide_secrets(text)
    assert "SECRETvalue" not in hidden
    assert "***" in hidden


@pytest.mark.parametrize(
    "said",
    [
        "Authorization must be 'Bearer <key or token>'",
        "the Bearer scheme reads none",
        'WWW-Authenticate: Bearer realm="tether operators"',
        "sorted(lines, key=lambda line: line.start)",
        "sort key=created_at",
    ],
)
def test_words_that_only_look_like_credentials_stay_legible(said: str) -> None:
    assert hide_secrets(said) == said
