"""Who is an operator: the key (compared in constant time) or a verified token whose
role or claim says so; everything else is refused with a cause that names no secret."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import AUDIENCE, HS256_SECRET, ISSUER, claims, sign
from tether.admin.auth import authenticate, describe, is_other_scheme
from tether.errors import AuthenticationError, ConfigurationError, ForbiddenError
from tether.settings import Settings, load_settings

KEY = "a-long-enough-operator-key"


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        operator_key=KEY, jwt_secret=HS256_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )


def _token(**extra: Any) -> str:
    return sign(claims(**extra), HS256_SECRET, "HS256")


def test_the_key_by_either_header(settings: Settings) -> None:
    assert authenticate(KEY, None, settings).via == "operator-key"
    assert authenticate(None, KEY, settings).via == "operator-key"


@pytest.mark.parametrize(
    ("bearer", "header", "cause"),
    [
        (None, None, "missing_credentials"),
        ("", "", "missing_credentials"),
        (KEY + " ", None, "wrong_operator_key"),
        (None, KEY.upper(), "wrong_operator_key"),
        ("é" * 30, None, "wrong_operator_key"),
        (_token(role="service_role", expires_in=-10), None, "expired"),
        (_token(role="service_role", aud="elsewhere"), None, "wrong_audience"),
    ],
)
def test_refusals_are_401_with_a_cause(
    settings: Settings, bearer: str | None, header: str | None, cause: str
) -> None:
    with pytest.raises(AuthenticationError) as refused:
        authenticate(bearer, header, settings)
    assert not isinstance(refused.value, ForbiddenError)
    assert refused.value.cause == cause
    assert KEY not in describe(cause)


def test_operators_by_role_or_claim(settings: Settings) -> None:
    by_role = authenticate(
        _token(role="service_role", sub="00000000-0000-0000-0000-00000000000a"), None, settings
    )
    assert (by_role.via, by_role.subject) == ("token", "00000000-0000-0000-0000-00000000000a")
    assert (
        authenticate(_token(app_metadata={"tether_operator": True}), None, settings).via == "token"
    )
    custom = load_settings(
        jwt_secret=HS256_SECRET, jwt_issuer=ISSUER, operator_roles="ops_admin", operator_claim="ops"
    )
    assert authenticate(_token(role="authenticated", ops=True), None, custom).via == "token"
    with pytest.raises(ForbiddenError):
        authenticate(_token(role="service_role"), None, custom)


def _without_sub(**extra: Any) -> str:
    payload = {k: v for k, v in claims(**extra).items() if k != "sub"}
    return sign(payload, HS256_SECRET, "HS256")


def test_a_service_token_names_no_user_and_is_an_operator_by_its_role(
    settings: Settings,
) -> None:
    # As a service's token is minted: the role, and no user.
    assert authenticate(_without_sub(role="service_role"), None, settings).subject == (
        "role:service_role"
    )
    # A subject it does give must be a user id: the logs name who acted by it.
    with pytest.raises(AuthenticationError) as malformed:
        authenticate(_token(role="service_role", sub="ops"), None, settings)
    assert malformed.value.cause == "malformed_subject"
    # The claim is a user's: a token naming no user does not get in by it.
    with pytest.raises(ForbiddenError):
        authenticate(_without_sub(app_metadata={"tether_operator": True}), None, settings)


@pytest.mark.parametrize(
    ("bearer", "header"),
    [
        (KEY, "wrong-but-long-enough-key"),
        ("wrong-but-long-enough-key", KEY),
        (_token(role="service_role", expires_in=-10), KEY),
    ],
    ids=["wrong-header", "wrong-bearer", "expired-bearer"],
)
def test_two_credentials_must_both_hold(settings: Settings, bearer: str, header: str) -> None:
    with pytest.raises(AuthenticationError):
        authenticate(bearer, header, settings)
    assert authenticate(KEY, KEY, settings).via == "operator-key"


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"app_metadata": {"tether_operator": "true"}},
        {"user_metadata": {"tether_operator": True}},
        {"role": "anon"},
        {"app_metadata": {"tether_operator": True}, "is_anonymous": True},
    ],
    ids=["plain-user", "string-claim", "user-editable-metadata", "anon", "anonymous-user"],
)
def test_valid_tokens_of_non_operators_are_403(
    settings: Settings, extra: dict[str, object]
) -> None:
    with pytest.raises(ForbiddenError):
        authenticate(_token(**extra), None, settings)


def test_without_a_key_or_token_verification_nothing_gets_in() -> None:
    bare = Settings()
    with pytest.raises(AuthenticationError) as no_key:
        authenticate("anything-at-all-0000", None, bare)
    assert no_key.value.cause == "operator_key_not_configured"
    with pytest.raises(AuthenticationError) as no_jwt:
        authenticate(_token(role="service_role"), None, bare)
    assert no_jwt.value.cause == "token_verification_not_configured"


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("short", "at least 16"),
        # What no header carries as typed: HTTP reads a header's bytes as Latin-1, and
        # clients trim spaces.
        (
            "\u043a\u043b\u044e\u0447-\u043a\u043b\u044e\u0447-\u043a\u043b\u044e\u0447-1",
            "printable ASCII",
        ),
        ("correct horse battery staple ", "no space at either end"),
        ("\tcorrect-horse-battery-staple", "printable ASCII"),
        # Sent as a Bearer, it is verified as an access token: it could never match.
        ("eyJ0eXAiOiJrZXkifQ.eyJvcGVyYXRvciI6MX0.c2VjcmV0", "look like an access token"),
    ],
)
def test_a_key_no_header_could_carry_is_refused_as_the_settings_are_read(
    key: str, says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says) as refused:
        load_settings(operator_key=key)
    assert "TETHER_OPERATOR_KEY" in str(refused.value)
    assert key not in str(refused.value)


@pytest.mark.parametrize(
    ("authorization", "other"),
    [
        ("Basic dXNlcjpwYXNz", True),
        (f"Basic {KEY}", True),
        ("Digest username=x, realm=y", True),
        ("Negotiate YIIB", True),
        (f"Bearer {KEY}", False),
        (f"bearer {KEY}", False),
        ("Bearer", False),
        ("Bearer ", False),
        ("Basic", False),
        (KEY, False),
        ("", False),
        ("   ", False),
    ],
)
def test_an_authorization_of_another_scheme(authorization: str, other: bool) -> None:
    """Another scheme with its credentials (what /health reads as none): not Bearer,
    empty or not, and not a lone word, which may be a key sent without its scheme."""
    assert is_other_scheme(authorization) is other
