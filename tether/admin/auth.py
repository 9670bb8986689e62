"""Who may use the operators' API: the holder of the operator key, or an operator's
Supabase access token.

- The operator key (``TETHER_OPERATOR_KEY``: the value, or where it is kept in Secrets
  Manager or SSM) comes as ``Authorization: Bearer <key>`` or ``X-Tether-Operator-Key``,
  and is compared in constant time.
- A token is verified exactly as ``$connect`` verifies one (same keys, algorithms,
  audience, issuer); its holder is an operator when its ``role`` is one of
  ``TETHER_OPERATOR_ROLES`` (a service's token may name no user) or the claim named by
  ``TETHER_OPERATOR_CLAIM`` is true on a user's token (``app_metadata`` is writable by
  the project's service role only).

No credentials, or credentials that do not verify: 401; sent both ways, both must
verify. A valid token whose holder is not an operator: 403. Neither the key nor a token
ever reaches a log or a response.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from typing import Any

from tether.auth import TokenVerifier, looks_like_jwt, verifier_for
from tether.errors import AuthenticationError, ForbiddenError
from tether.settings import Settings, read_checked_secret

KEY_HEADER = "X-Tether-Operator-Key"


@dataclass(frozen=True)
class Operator:
    """Who acted, as the logs name them: the key's holder, or a token's user."""

    via: str
    subject: str

    def __str__(self) -> str:
        return f"{self.via}:{self.subject}"


def operator_key(settings: Settings) -> str | None:
    """The configured key, read from its secret once per container."""
    return read_checked_secret(settings, "operator_key")


@functools.lru_cache(maxsize=4)
def _verifier(settings: Settings) -> TokenVerifier | None:
    if not settings.issuer:
        return None  # no issuer to check: operator tokens are not accepted at all
    # Any role that may hold an operator claim verifies; the operator check follows.
    return verifier_for(
        settings,
        allowed_roles=settings.operator_role_set | settings.role_allow_list,
        allow_anonymous_users=False,
        # A service's token (role service_role) names no user: its role is the operator.
        subject_required=False,
    )


def _claim(claims: dict[str, Any], path: str) -> object:
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _by_key(given: str, settings: Settings) -> Operator:
    key = operator_key(settings)
    if key is None:
        raise AuthenticationError("operator_key_not_configured")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise AuthenticationError("wrong_operator_key")
    return Operator(via="operator-key", subject="key")


def _by_token(token: str, settings: Settings) -> Operator:
    verifier = _verifier(settings)
    if verifier is None:
        raise AuthenticationError("token_verification_not_configured")
    identity = verifier.verify(token)
    if identity.role in settings.operator_role_set:
        # Logged as its user when it names one, else as its role.
        return Operator(via="token", subject=str(identity.user_id or f"role:{identity.role}"))
    claim = settings.operator_claim
    if identity.user_id is not None and claim and _claim(identity.claims, claim) is True:
        # The claim is a user's (app_metadata): a token without a user cannot hold it.
        return Operator(via="token", subject=str(identity.user_id))
    raise ForbiddenError("not_an_operator")


def authenticate(bearer: str | None, key_header: str | None, settings: Settings) -> Operator:
    """The operator these credentials name, or AuthenticationError / ForbiddenError.
    Sent both ways, both must hold: a wrong credential is never passed over."""
    operator = None
    if bearer:
        operator = (
            _by_token(bearer, settings) if looks_like_jwt(bearer) else _by_key(bearer, settings)
        )
    if key_header:
        operator = _by_key(key_header, settings)
    if operator is None:
        raise AuthenticationError("missing_credentials")
    return operator


def is_other_scheme(authorization: str) -> bool:
    """Whether an Authorization header is ``<scheme> <credentials>`` of a scheme other
    than Bearer (Basic, Digest, ...): none tether takes, so none that failed. An empty
    Bearer, or a lone word (a key sent without its scheme), is not."""
    scheme, _, rest = authorization.strip().partition(" ")
    return bool(scheme) and scheme.lower() != "bearer" and bool(rest.strip())


DETAILS = {
    "missing_credentials": "send the operator key (Authorization: Bearer <key>, or"
    f" {KEY_HEADER}) or an operator's access token (Authorization: Bearer <token>)",
    "repeated_credentials": "send each credential once: one Authorization header, one"
    f" {KEY_HEADER}",
    "unsupported_authorization": "Authorization must be 'Bearer <key or token>'",
    "empty_operator_key": f"{KEY_HEADER} is empty: send the key in it, or leave it out",
    "wrong_operator_key": "the operator key was not accepted",
    "operator_key_not_configured": "no operator key is configured (TETHER_OPERATOR_KEY)",
    "token_verification_not_configured": "access tokens cannot be verified here: set"
    " TETHER_JWKS_URL (or SUPABASE_URL) or TETHER_JWT_SECRET",
    "not_an_operator": "the token is valid, but its holder is not an operator",
    "role_not_allowed": "the token is valid, but its role is not an operator's",
    "anonymous_user_not_allowed": "anonymous users are not operators",
}
"""What each cause tells the caller; other causes (expired, bad_signature, ...) are
already plain codes."""


def describe(cause: str) -> str:
    return DETAILS.get(cause, f"the access token was not accepted ({cause})")
