"""Verifies Supabase access tokens locally with PyJWT.

Asymmetric keys (ES256, RS256) come from the project's JWKS URL, cached per container
and fetched again when a token names a key id the cache does not know; while the
issuer cannot give them (unreachable, slower than the few seconds a fetch gets in
all, or answering no JSON object: an error page), the keys it last gave verify for up
to an hour after their fetch, so a short outage of the issuer does not refuse every
handshake once the cache expires. Legacy projects verify HS256 with the JWT secret.
Signature, algorithm, ``exp``, ``aud`` and ``iss`` are always checked: supabase-auth's
``get_claims`` skips audience and issuer, which is weaker than this contract.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import jwt

from tether.bounded_get import get_within
from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    SigningKeysUnavailableError,
)

if TYPE_CHECKING:
    from jwt.jwk_set_cache import JWKSetCache

    from tether.settings import Settings

logger = logging.getLogger("tether.auth")

ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
SYMMETRIC_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "sub", "aud", "iss"]
MAX_TOKEN_LENGTH = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024
"""A key set is a few KB: a longer answer is the issuer's failure, not read to its end."""


@dataclass(frozen=True)
class Identity:
    user_id: UUID | None
    """The ``sub`` claim as a user id; None only where no subject is required."""
    role: str
    claims: dict[str, Any]


class _JwksClient(jwt.PyJWKClient):
    """PyJWT's client, with two changes to its fetch. Its ``timeout`` is the time the
    whole fetch gets (resolving the name, connecting, the headers, the body), not each
    socket operation's, which an issuer answering a byte at a time stretches to the
    function's timeout (and the name's resolution had none at all).
    And an answer that is JSON and no object (a list, null), or too long for a key set,
    is the issuer's failure as a body that is no JSON at all is: PyJWT raises for it the
    error it raises for a key the set lacks, which would refuse a good token as 401."""

    def fetch_data(self) -> Any:
        # A body too long is a ValueError (BodyTooLargeError), as one that is no JSON.
        try:
            body = get_within(
                self.uri,
                seconds=self.timeout,
                max_bytes=MAX_JWKS_BYTES,
                headers=self.headers,
                ssl_context=self.ssl_context,
            )
        except (OSError, http.client.HTTPException) as exc:
            # The issuer unreachable, failing, or past the time given: as PyJWT's own.
            raise jwt.PyJWKClientConnectionError(
                f'Fail to fetch data from the url, err: "{exc}"'
            ) from exc
        jwk_set = json.loads(body)
        if not isinstance(jwk_set, dict):
            # A ValueError, as a body that is no JSON: the issuer's failure, not a type's.
            raise ValueError("The JWKS endpoint did not return a JSON object")  # noqa: TRY004
        # As PyJWT's fetch_data: the cache filled (PyJWKSetError for no usable key),
        # and the time of the fetch its refetch cooldown counts from.
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.put(jwk_set)
        self._last_successful_fetch = time.monotonic()
        return jwk_set


class TokenVerifier:
    def __init__(
        self,
        *,
        audience: str,
        issuer: str,
        jwks_url: str | None = None,
        hs256_secret: str | None = None,
        allowed_roles: frozenset[str] = frozenset({"authenticated"}),
        allow_anonymous_users: bool = False,
        subject_required: bool = True,
        jwks_cache_seconds: float = 300.0,
        jwks_refresh_cooldown_seconds: float = 30.0,
        jwks_timeout_seconds: float = 3.0,
        jwks_keep_seconds: float = 3600.0,
        leeway_seconds: float = 0.0,
    ) -> None:
        if not jwks_url and not hs256_secret:
            raise ConfigurationError("a JWKS URL or an HS256 secret is required to verify tokens")
        self._audience = audience
        self._issuer = issuer
        self._secret = hs256_secret
        self._allowed_roles = allowed_roles
        self._allow_anonymous_users = allow_anonymous_users
        self._subject_required = subject_required
        self._required_claims = [
            claim for claim in REQUIRED_CLAIMS if subject_required or claim != "sub"
        ]
        self._leeway = leeway_seconds
        self._jwks: jwt.PyJWKClient | None = None
        # The signing keys of the last key set fetched, and when: they still verify
        # while the issuer cannot answer, for at most jwks_keep_seconds after that fetch.
        self._kept: tuple[float, dict[str, jwt.PyJWK]] | None = None
        self._keep_seconds = jwks_keep_seconds
        self._retry_seconds = jwks_refresh_cooldown_seconds
        self._retry_at = 0.0
        if jwks_url:
            # PyJWKClient caches the key set and refetches it once for an unknown kid.
            try:
                self._jwks = _JwksClient(
                    jwks_url,
                    cache_jwk_set=True,
                    lifespan=int(jwks_cache_seconds),
                    timeout=jwks_timeout_seconds,
                    cooldown_duration=jwks_refresh_cooldown_seconds,
                )
            except jwt.PyJWKClientError as exc:
                # The settings refuse what PyJWT does; a caller of its own gets it typed.
                raise ConfigurationError(
                    f"TETHER_JWKS_URL or TETHER_JWKS_CACHE_SECONDS: {exc}"
                ) from None

    def _key_for(self, token: str, algorithm: str, header: dict[str, Any]) -> Any:
        if algorithm == SYMMETRIC_ALGORITHM:
            if not self._secret:
                raise AuthenticationError("algorithm_not_allowed")
            return self._secret
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self._jwks is None:
                raise AuthenticationError("algorithm_not_allowed")
            signing_key = self._signing_key(self._jwks, token, header)
            if signing_key.algorithm_name != algorithm:
                raise AuthenticationError("algorithm_mismatch")
            return signing_key.key
        raise AuthenticationError("algorithm_not_allowed")

    def _signing_key(self, jwks: jwt.PyJWKClient, token: str, header: dict[str, Any]) -> jwt.PyJWK:
        if time.monotonic() < self._retry_at and self._kept_keys() is not None:
            # The issuer failed moments ago: not asked again on every handshake (each
            # would wait for its timeout), the keys it last gave verify meanwhile.
            return self._kept_key(header, None)
        try:
            signing_key = jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            # The issuer's failure, not the caller's: never a 401 that a client would
            # take for a bad token (and sign its user out).
            return self._kept_key(header, exc)
        except jwt.PyJWKClientError as exc:
            # The token names a key the set lacks; or the issuer answered a key set
            # without a signing key (it stands: the keys before are not kept for it).
            if self._holds_signing_keys():
                # The set it answered is now the keys it last gave, though the token's
                # key is not among them: a key it dropped is not kept for its outages.
                self._keep_fetched_keys()
                raise AuthenticationError("unknown_signing_key") from exc
            if self._holds_key_set():
                self._forget_kept_keys()
                raise self._unavailable(exc) from exc
            return self._kept_key(header, exc)
        except jwt.PyJWKSetError as exc:
            # A key set none of whose keys can be read: the issuer's word, not the
            # token's fault (503), and no reason to trust the keys it gave before.
            self._forget_kept_keys()
            raise self._unavailable(exc) from exc
        except ValueError as exc:
            # A body that is not JSON (an error page answered with 200), or JSON that is
            # no object: the issuer's failure, as when it cannot be reached.
            return self._kept_key(header, exc)
        except jwt.PyJWTError as exc:
            raise AuthenticationError("malformed_token") from exc
        self._keep_fetched_keys()
        return signing_key

    def _cache(self) -> JWKSetCache | None:
        """PyJWKClient's cache of the key set it last fetched (its public attribute)."""
        return self._jwks.jwk_set_cache if self._jwks is not None else None

    def _keep_fetched_keys(self) -> None:
        cache = self._cache()
        cached = cache.jwk_set_with_timestamp if cache is not None else None
        if cached is None or (self._kept is not None and self._kept[0] == cached.timestamp):
            return
        keys = {
            str(key.key_id): key
            for key in cached.get_jwk_set().keys
            if key.public_key_use in ("sig", None) and key.key_id
        }
        self._kept = (cached.timestamp, keys)

    def _forget_kept_keys(self) -> None:
        """The issuer answered a key set with no key to use (all revoked, say): that is
        now the keys it last gave, so its next outage brings none of the earlier back."""
        self._kept = (time.monotonic(), {})

    def _kept_keys(self) -> dict[str, jwt.PyJWK] | None:
        if self._kept is None:
            return None
        fetched_at, keys = self._kept
        return keys if time.monotonic() - fetched_at <= self._keep_seconds else None

    def _kept_key(self, header: dict[str, Any], failure: Exception | None) -> jwt.PyJWK:
        """The key the token names among those last fetched, while the issuer cannot
        give them: a 503 (to retry) when none is kept, or none that young enough."""
        if failure is not None:
            self._retry_at = time.monotonic() + self._retry_seconds
        kept, kid = self._kept_keys(), header.get("kid")
        key = kept.get(kid) if kept is not None and isinstance(kid, str) else None
        if key is None:
            if failure is None:
                raise SigningKeysUnavailableError("the issuer's signing keys could not be fetched")
            raise self._unavailable(failure) from failure
        if failure is not None:
            logger.warning(
                "signing keys unavailable; the keys last fetched verify meanwhile",
                extra={"error": str(failure)},
            )
        return key

    def _holds_key_set(self) -> bool:
        """Whether a key set the issuer answered is in the cache, and fresh."""
        cache = self._cache()
        return cache is not None and cache.get() is not None

    @staticmethod
    def _unavailable(failure: Exception) -> SigningKeysUnavailableError:
        logger.warning("signing keys unavailable", extra={"error": str(failure)})
        return SigningKeysUnavailableError("the issuer's signing keys could not be fetched")

    def _holds_signing_keys(self) -> bool:
        """Whether the cached key set (no fetch) has a key a token could name."""
        if self._jwks is None or not self._holds_key_set():
            return False
        try:
            self._jwks.get_signing_keys()  # from the cache just read: no fetch
        except jwt.PyJWTError:
            return False
        return True

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthenticationError("missing_token")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            # A JWT is base64url and dots: anything else is refused before PyJWT
            # (which would fail encoding a lone surrogate, not refuse it).
            raise AuthenticationError("malformed_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthenticationError("malformed_token") from exc
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise AuthenticationError("malformed_token")
        key = self._key_for(token, algorithm, header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required_claims, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError("wrong_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError("wrong_issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"missing_claim_{exc.claim}") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthenticationError("bad_signature") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthenticationError("not_yet_valid") from exc
        except jwt.PyJWTError as exc:
            raise AuthenticationError("invalid_token") from exc
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        user_id = None
        if "sub" in claims or self._subject_required:
            # Optional (a service's token names no user), but never malformed: the
            # logs name who acted by it.
            try:
                user_id = UUID(str(claims["sub"]))
            except ValueError as exc:
                raise AuthenticationError("malformed_subject") from exc
        role = str(claims.get("role") or "")
        if role not in self._allowed_roles:
            raise ForbiddenError("role_not_allowed")
        if claims.get("is_anonymous") is True and not self._allow_anonymous_users:
            raise ForbiddenError("anonymous_user_not_allowed")
        return Identity(user_id=user_id, role=role, claims=claims)


def verifier_for(
    settings: Settings,
    *,
    allowed_roles: frozenset[str],
    allow_anonymous_users: bool,
    subject_required: bool = True,
) -> TokenVerifier | None:
    """The verifier these settings describe (signing keys, secret, audience, issuer,
    leeway), for the roles given; None when nothing to verify with is configured."""
    if not settings.jwt_secret and not settings.signing_keys_url:
        return None
    from tether.settings import read_checked_secret  # noqa: PLC0415

    return TokenVerifier(
        audience=settings.jwt_audience,
        issuer=settings.issuer or "",
        jwks_url=settings.signing_keys_url,
        hs256_secret=read_checked_secret(settings, "jwt_secret"),
        allowed_roles=allowed_roles,
        allow_anonymous_users=allow_anonymous_users,
        subject_required=subject_required,
        jwks_cache_seconds=settings.jwks_cache_seconds,
        jwks_refresh_cooldown_seconds=settings.jwks_refresh_cooldown_seconds,
        jwks_timeout_seconds=settings.jwks_timeout_seconds,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def looks_like_jwt(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 3 and all(parts[:2]) and value.startswith("ey")


def split_protocols(header: str | None) -> tuple[str | None, list[str]]:
    """Split ``Sec-WebSocket-Protocol`` into (token, other offered protocols).

    Browsers cannot set headers on a WebSocket, so they pass the access token as
    one of the offered sub-protocols: ``new WebSocket(url, ["tether", token])``.
    """
    if not header:
        return None, []
    token: str | None = None
    protocols: list[str] = []
    for raw in header.split(","):
        value = raw.strip()
        if not value:
            continue
        if token is None and looks_like_jwt(value):
            token = value
        else:
            protocols.append(value)
    return token, protocols
