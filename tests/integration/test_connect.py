"""$connect: authentication, the session row, and refusals that write nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel

from functions import connect
from tests.conftest import with_database
from tests.support import (
    HS256_SECRET,
    FakeLambdaContext,
    JwksServer,
    SigningKeys,
    claims,
    metrics,
    sign,
    with_headers,
    with_query,
    ws_event,
)
from tether import runtime, sweep_and_admin_models
from tether.auth import MAX_JWKS_BYTES, TokenVerifier
from tether.errors import AuthenticationError, SigningKeysUnavailableError

Conn = psycopg.Connection[dict[str, object]]
IP = "203.0.113.10"


def _sessions(db: Conn) -> list[dict[str, object]]:
    return db.execute(
        "select * from public.conversation_sessions order by session_start"
    ).fetchall()


def _connect(event: dict[str, Any]) -> dict[str, Any]:
    return connect.lambda_handler(event, FakeLambdaContext())


@pytest.fixture
def keys() -> SigningKeys:
    return SigningKeys()


@pytest.fixture
def jwks(keys: SigningKeys, lambda_env: pytest.MonkeyPatch) -> Iterator[JwksServer]:
    """Asymmetric keys only: the project's JWKS, no HS256 secret."""
    server = JwksServer(keys)
    with server.running():
        lambda_env.delenv("TETHER_JWT_SECRET")
        lambda_env.setenv("TETHER_JWKS_URL", server.url)
        lambda_env.setenv("TETHER_JWKS_REFRESH_COOLDOWN_SECONDS", "0")
        runtime.reset()
        yield server


@pytest.mark.usefixtures("lambda_env")
def test_hs256_token_opens_a_session_with_request_metadata(
    db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    user = str(uuid.uuid4())
    token = sign(claims(sub=user), HS256_SECRET, "HS256")
    connected_ms = int(time.time() * 1000) - 1500
    event = with_query(ws_event("connect", "hs256conn=", connectedAt=connected_ms), token=token)
    response = _connect(event)
    assert response["statusCode"] == 200
    [row] = _sessions(db)
    assert str(row["user_id"]) == user
    assert row["is_active"] is True
    assert row["connection_id"] == "hs256conn="
    assert row["source_ip"] == "203.0.113.10"
    assert row["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64) tether-tests"
    assert (row["api_id"], row["stage"]) == ("abcdef1234", "prod")
    assert row["session_start"] == datetime.fromtimestamp(connected_ms / 1000, tz=UTC)
    out = capsys.readouterr().out
    assert ("SessionsOpened", 1.0, {}) in [(n, v, {}) for n, v, _ in metrics(out)]
    assert token not in out


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_asymmetric_tokens_verify_against_the_jwks(
    db: Conn, keys: SigningKeys, jwks: JwksServer, algorithm: str
) -> None:
    user = str(uuid.uuid4())
    key, kid = (
        (keys.es256, keys.es256_kid) if algorithm == "ES256" else (keys.rs256, keys.rs256_kid)
    )
    token = sign(claims(sub=user), key, algorithm, kid)
    response = _connect(with_query(ws_event("connect", f"{algorithm}conn="), token=token))
    assert response["statusCode"] == 200
    assert [str(r["user_id"]) for r in _sessions(db)] == [user]


def test_jwks_is_cached_and_refetched_for_an_unknown_key_id(
    db: Conn, keys: SigningKeys, jwks: JwksServer
) -> None:
    for index in range(3):
        token = sign(claims(), keys.es256, "ES256", keys.es256_kid)
        assert (
            _connect(with_query(ws_event("connect", f"c{index}="), token=token))["statusCode"]
            == 200
        )
    assert jwks.fetches == 1
    # The project rotates its keys: a token with the new kid triggers one refetch.
    rotated = SigningKeys()
    jwks.keys = rotated
    token = sign(claims(), rotated.es256, "ES256", rotated.es256_kid)
    assert _connect(with_query(ws_event("connect", "rotated="), token=token))["statusCode"] == 200
    assert jwks.fetches == 2
    assert len(_sessions(db)) == 4


@pytest.mark.usefixtures("lambda_env")
def test_browser_token_in_subprotocol_is_accepted_and_protocol_echoed(db: Conn) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    event = with_headers(
        ws_event("connect", "browser="), **{"Sec-WebSocket-Protocol": f"tether.v1, {token}"}
    )
    response = _connect(event)
    assert response["statusCode"] == 200
    assert response["headers"] == {"Sec-WebSocket-Protocol": "tether.v1"}
    assert len(_sessions(db)) == 1


@pytest.mark.usefixtures("lambda_env")
def test_token_only_subprotocol_is_echoed_so_the_browser_keeps_the_socket(db: Conn) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    event = with_headers(ws_event("connect", "onlytoken="), **{"sec-websocket-protocol": token})
    response = _connect(event)
    assert response["statusCode"] == 200
    assert response["headers"] == {"Sec-WebSocket-Protocol": token}


def _other_es256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _rejections(keys: SigningKeys) -> dict[str, tuple[str | None, int, str]]:
    """name -> (token, expected status, expected cause in the log)."""
    rs_public_pem = keys.rs256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    return {
        "no token": (None, 401, "missing_token"),
        "expired": (
            sign(claims(expires_in=-120), keys.es256, "ES256", keys.es256_kid),
            401,
            "expired",
        ),
        "wrong aud": (
            sign(claims(aud="other"), keys.es256, "ES256", keys.es256_kid),
            401,
            "wrong_audience",
        ),
        "wrong iss": (
            sign(claims(iss="https://evil.example/auth/v1"), keys.es256, "ES256", keys.es256_kid),
            401,
            "wrong_issuer",
        ),
        "wrong key": (
            sign(claims(), _other_es256(), "ES256", keys.es256_kid),
            401,
            "bad_signature",
        ),
        "unknown kid": (
            sign(claims(), _other_es256(), "ES256", "nobody-knows-this-kid"),
            401,
            "unknown_signing_key",
        ),
        "alg none": (f"{header}.{body}.", 401, "algorithm_not_allowed"),
        "hs256 with the public key": (
            # The classic confusion attack: HMAC keyed with the RSA public key.
            _hs256_with_key(claims(), rs_public_pem),
            401,
            "algorithm_not_allowed",
        ),
        "garbage": ("not-a-jwt-at-all", 401, "malformed_token"),
        # A lone surrogate cannot be encoded: refused, not a crash.
        "not ascii": ("eyJ\ud800.eyJ.c2ln", 401, "malformed_token"),
        "no sub": (
            sign(
                {k: v for k, v in claims().items() if k != "sub"},
                keys.es256,
                "ES256",
                keys.es256_kid,
            ),
            401,
            "missing_claim_sub",
        ),
        "anon role": (
            sign(claims(role="anon"), keys.es256, "ES256", keys.es256_kid),
            403,
            "role_not_allowed",
        ),
        "anonymous user": (
            sign(claims(is_anonymous=True), keys.es256, "ES256", keys.es256_kid),
            403,
            "anonymous_user_not_allowed",
        ),
    }


def _hs256_with_key(payload: dict[str, Any], key: bytes) -> str:
    # PyJWT refuses to HMAC with a PEM key, as it should; an attacker builds it by hand.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


REJECTIONS = list(_rejections(SigningKeys()).keys())


@pytest.mark.parametrize("case", REJECTIONS)
def test_rejections_answer_non_2xx_write_nothing_and_never_log_the_token(
    db: Conn, keys: SigningKeys, jwks: JwksServer, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    token, status, cause = _rejections(keys)[case]
    event = ws_event("connect", "rejected=")
    if token is not None:
        event = with_query(event, token=token)
    response = _connect(event)
    assert response["statusCode"] == status
    assert _sessions(db) == []
    out = capsys.readouterr().out
    assert ("ConnectRejected", 1.0, {"Cause": cause}) in [
        (n, v, {k: d for k, d in dims.items() if k == "Cause"}) for n, v, dims in metrics(out)
    ]
    assert f'"cause":"{cause}"' in out.replace(" ", "")
    if token:
        assert token not in out


def test_signing_keys_that_cannot_be_fetched_answer_503_not_401(
    db: Conn, keys: SigningKeys, lambda_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issuer's outage says nothing of the token: a 401 would tell the client its
    token is bad (and it might sign its user out); a 503 tells it to try again."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lambda_env.delenv("TETHER_JWT_SECRET")
    lambda_env.setenv("TETHER_JWKS_URL", f"http://127.0.0.1:{port}/jwks.json")
    runtime.reset()
    token = sign(claims(), keys.es256, "ES256", kid=keys.es256_kid)
    response = _connect(with_query(ws_event("connect", "nokeys="), token=token))
    assert response["statusCode"] == 503
    assert json.loads(response["body"]) == {
        "error": "signing_keys_unavailable",
        "message": "tokens cannot be verified right now; try again shortly",
    }
    assert _sessions(db) == []
    out = capsys.readouterr().out
    assert ("ConnectRejected", {"Cause": "signing_keys_unavailable"}) in [
        (n, {k: d for k, d in dims.items() if k == "Cause"}) for n, _, dims in metrics(out)
    ]
    assert token not in out


@pytest.mark.parametrize(
    "answer",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b"{}",
        b'{"keys": []}',
        b'{"keys": [{"kty": "EC", "kid": "half-a-key"}]}',
        b"[]",
        b"null",
    ],
    ids=["an error page", "no keys member", "no keys", "no readable key", "a list", "null"],
)
def test_signing_keys_the_issuer_answers_as_garbage_answer_503_and_recover(
    db: Conn,
    keys: SigningKeys,
    jwks: JwksServer,
    capsys: pytest.CaptureFixture[str],
    answer: bytes,
) -> None:
    """An answer that is no key set says nothing of the token either: a valid token
    is not told it is malformed or signed by an unknown key (and signed out), and once
    the issuer answers keys again the same token connects."""
    jwks.answer = answer
    token = sign(claims(), keys.es256, "ES256", kid=keys.es256_kid)
    response = _connect(with_query(ws_event("connect", "garbled="), token=token))
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"] == "signing_keys_unavailable"
    assert _sessions(db) == []
    out = capsys.readouterr().out
    assert ("ConnectRejected", {"Cause": "signing_keys_unavailable"}) in [
        (n, {k: d for k, d in dims.items() if k == "Cause"}) for n, _, dims in metrics(out)
    ]
    assert token not in out

    jwks.answer = None
    assert _connect(with_query(ws_event("connect", "garbled="), token=token))["statusCode"] == 200
    assert len(_sessions(db)) == 1


def test_keys_last_fetched_verify_while_the_issuer_cannot_give_them(
    db: Conn,
    keys: SigningKeys,
    jwks: JwksServer,
    lambda_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The key set expires from the cache every few minutes; an issuer that cannot
    answer then (down, or answering an error page) refused every handshake with 503
    until it came back, though the keys it gave minutes before still held."""
    lambda_env.setenv("TETHER_JWKS_CACHE_SECONDS", "1")
    runtime.reset()
    token = sign(claims(), keys.es256, "ES256", kid=keys.es256_kid)
    assert _connect(with_query(ws_event("connect", "before="), token=token))["statusCode"] == 200
    jwks.answer = b"<html><body>502 Bad Gateway</body></html>"
    time.sleep(1.2)  # the cached key set has expired
    response = _connect(with_query(ws_event("connect", "during="), token=token))
    assert response["statusCode"] == 200, response
    assert jwks.fetches == 2  # asked, and it answered no key set
    assert "signing keys unavailable" in capsys.readouterr().out
    # A key the issuer never gave is not trusted for its silence: 503, to retry.
    stranger = sign(claims(), _other_es256(), "ES256", "a-key-nobody-gave")
    refused = _connect(with_query(ws_event("connect", "stranger="), token=stranger))
    assert refused["statusCode"] == 503
    assert len(_sessions(db)) == 2


def _verifier(
    server: JwksServer,
    payload: dict[str, Any],
    *,
    jwks_cache_seconds: float = 300.0,
    jwks_keep_seconds: float = 3600.0,
    jwks_timeout_seconds: float = 3.0,
) -> TokenVerifier:
    """A verifier of the tokens ``payload`` stands for, against ``server``'s key set, asking
    it again at once after a failure (no cooldown), as each of these tests needs."""
    return TokenVerifier(
        audience=payload["aud"],
        issuer=payload["iss"],
        jwks_url=server.url,
        jwks_refresh_cooldown_seconds=0,
        jwks_cache_seconds=jwks_cache_seconds,
        jwks_keep_seconds=jwks_keep_seconds,
        jwks_timeout_seconds=jwks_timeout_seconds,
    )


def test_keys_last_fetched_verify_for_a_bounded_time_only(keys: SigningKeys) -> None:
    server = JwksServer(keys)
    with server.running():
        payload = claims()
        verifier = _verifier(server, payload, jwks_cache_seconds=1, jwks_keep_seconds=2)
        token = sign(payload, keys.es256, "ES256", kid=keys.es256_kid)
        started = time.monotonic()
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        server.answer = b"<html><body>504 Gateway Timeout</body></html>"
        time.sleep(1.2)
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
        with pytest.raises(SigningKeysUnavailableError):
            verifier.verify(token)
        # The issuer back, the keys it gives verify again.
        server.answer = None
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])


def test_a_key_the_issuer_dropped_is_not_kept_for_its_next_outage(keys: SigningKeys) -> None:
    """The issuer rotates a key out (revoked, leaked): tokens signed by it get 401.
    Its next outage must not bring the dropped key back: the keys it last gave are
    the new set, though no token of the new key came by since."""
    server = JwksServer(keys)
    with server.running():
        payload = claims()
        verifier = _verifier(server, payload, jwks_cache_seconds=1)
        dropped = sign(payload, keys.es256, "ES256", kid=keys.es256_kid)
        assert verifier.verify(dropped).user_id == uuid.UUID(payload["sub"])
        rotated = SigningKeys()
        server.keys = rotated
        time.sleep(1.2)  # the key set expires from the cache: the next token fetches it
        with pytest.raises(AuthenticationError) as refused:
            verifier.verify(dropped)
        assert refused.value.cause == "unknown_signing_key"
        server.answer = b"<html><body>502 Bad Gateway</body></html>"
        time.sleep(1.2)
        with pytest.raises(SigningKeysUnavailableError):
            verifier.verify(dropped)
        # The keys it did give last verify through the outage.
        current = sign(payload, rotated.es256, "ES256", kid=rotated.es256_kid)
        assert verifier.verify(current).user_id == uuid.UUID(payload["sub"])


@pytest.mark.parametrize("emptied", [b'{"keys": []}', b'{"keys": [{"kty": "nonsense"}]}'])
def test_keys_the_issuer_took_back_all_at_once_stay_gone_through_its_next_outage(
    keys: SigningKeys, emptied: bytes
) -> None:
    """The issuer answers a key set with no key to use (every key revoked at once):
    that is the keys it last gave. Its next outage must not bring the earlier keys
    back for the hour kept keys verify."""
    server = JwksServer(keys)
    with server.running():
        payload = claims()
        verifier = _verifier(server, payload, jwks_cache_seconds=1)
        token = sign(payload, keys.es256, "ES256", kid=keys.es256_kid)
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        server.answer = emptied
        time.sleep(1.2)  # the key set expires from the cache: the next token fetches it
        with pytest.raises(SigningKeysUnavailableError):
            verifier.verify(token)
        server.answer = b"<html><body>504 Gateway Timeout</body></html>"
        time.sleep(1.2)
        with pytest.raises(SigningKeysUnavailableError):
            verifier.verify(token)
        # The issuer back with its keys: they verify again.
        server.answer = None
        time.sleep(1.2)
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])


@pytest.mark.parametrize("answer", [b"[]", b"null", b"<html>502 Bad Gateway</html>"])
def test_a_new_key_met_while_the_issuer_answers_garbage_is_not_called_unknown(
    keys: SigningKeys, answer: bytes
) -> None:
    """The issuer rotated to a key this container has not fetched yet, and answers the
    refetch with something that is no key set: nothing is said of the token (503, to
    retry), whether the answer is JSON (a list, null) or not; a 401 unknown_signing_key
    would sign a user with a good token out."""
    server = JwksServer(keys)
    with server.running():
        payload = claims()
        verifier = _verifier(server, payload)
        token = sign(payload, keys.es256, "ES256", kid=keys.es256_kid)
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        rotated = SigningKeys()
        server.answer = answer
        with pytest.raises(SigningKeysUnavailableError):
            verifier.verify(sign(payload, rotated.es256, "ES256", kid=rotated.es256_kid))
        server.keys, server.answer = rotated, None
        renewed = sign(payload, rotated.es256, "ES256", kid=rotated.es256_kid)
        assert verifier.verify(renewed).user_id == uuid.UUID(payload["sub"])


@pytest.mark.parametrize("drip", ["headers", "body"])
def test_an_issuer_answering_a_byte_at_a_time_costs_a_handshake_its_timeout_only(
    keys: SigningKeys, drip: Literal["headers", "body"]
) -> None:
    """An issuer (or a proxy in front of it) sending its answer a byte at a time, each
    within the timeout of one socket read, held every handshake as long as it dripped:
    up to the function's timeout, API Gateway's 29 s failing the handshake. The fetch
    gets its timeout in all: past it, the keys last fetched verify, and with none kept
    the answer is 503 (to retry), never 401."""
    server = JwksServer(keys)
    with server.running():
        payload = claims()
        verifier = _verifier(server, payload, jwks_cache_seconds=1, jwks_timeout_seconds=1)
        token = sign(payload, keys.es256, "ES256", kid=keys.es256_kid)
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        server.drip = drip  # 10 bytes, 0.4 s apart: the whole answer takes 4 s
        time.sleep(1.2)  # the key set expires from the cache: the next token fetches it
        started = time.monotonic()
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        assert time.monotonic() - started < 3
        assert server.fetches == 2

        with_none_kept = _verifier(server, payload, jwks_timeout_seconds=1)
        started = time.monotonic()
        with pytest.raises(SigningKeysUnavailableError):
            with_none_kept.verify(token)
        assert time.monotonic() - started < 3


def test_the_fetchs_time_in_all_is_set_from_the_environment(
    db: Conn,
    keys: SigningKeys,
    jwks: JwksServer,
    lambda_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TETHER_JWKS_TIMEOUT_SECONDS bounds a real slow issuer: a handshake waited its
    default 3 s, whatever the environment said. Past the time set, the keys last fetched
    verify, and with none kept the answer is 503 (to retry), never 401."""
    lambda_env.setenv("TETHER_JWKS_TIMEOUT_SECONDS", "1")
    lambda_env.setenv("TETHER_JWKS_CACHE_SECONDS", "1")
    runtime.reset()
    token = sign(claims(), keys.es256, "ES256", kid=keys.es256_kid)
    assert _connect(with_query(ws_event("connect", "before="), token=token))["statusCode"] == 200
    jwks.drip = "body"  # 10 bytes, 0.4 s apart: the whole answer takes 4 s
    time.sleep(1.2)  # the key set expires from the cache: the next token fetches it
    started = time.monotonic()
    assert _connect(with_query(ws_event("connect", "kept="), token=token))["statusCode"] == 200
    assert time.monotonic() - started < 2.5
    assert jwks.fetches == 2
    assert "signing keys unavailable" in capsys.readouterr().out

    runtime.reset()  # a new container: no keys kept
    started = time.monotonic()
    response = _connect(with_query(ws_event("connect", "none-kept="), token=token))
    assert response["statusCode"] == 503
    assert time.monotonic() - started < 2.5
    assert jwks.fetches == 3
    assert len(_sessions(db)) == 2


ISSUER_HOST = "keys.tether.test"


class HangingResolver:
    """socket.getaddrinfo for the issuer's name: the JWKS server's address, or, while
    ``hanging``, no answer at all (a resolver that does not answer) until the test ends.
    Every other name goes to the system's resolver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hanging = False
        self.asked = 0
        self._released = threading.Event()
        self._system = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self._getaddrinfo)

    def _getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != ISSUER_HOST:
            return self._system(host, port, *args, **kwargs)
        self.asked += 1
        if self.hanging:
            self._released.wait(timeout=10)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self._system("127.0.0.1", port, *args, **kwargs)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def resolver(jwks: JwksServer, lambda_env: pytest.MonkeyPatch) -> Iterator[HangingResolver]:
    """The issuer reached by a name this test resolves (patched in: a fault injected)."""
    hanging = HangingResolver(lambda_env)
    lambda_env.setenv("TETHER_JWKS_URL", jwks.url.replace("127.0.0.1", ISSUER_HOST))
    runtime.reset()
    yield hanging
    hanging.release()


def test_a_resolver_that_does_not_answer_costs_a_handshake_the_fetchs_time_only(
    db: Conn,
    keys: SigningKeys,
    jwks: JwksServer,
    resolver: HangingResolver,
    lambda_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """getaddrinfo takes no timeout: a resolver that did not answer held every handshake
    as long as the system's resolver waited (tens of seconds, up to the function's
    timeout), the fetch's time in all notwithstanding. Its time now counts toward the
    fetch's: past it the issuer is unreachable, as when it answers slowly: the keys last
    fetched verify, and with none kept the answer is 503 (to retry), never 401."""
    lambda_env.setenv("TETHER_JWKS_TIMEOUT_SECONDS", "1")
    lambda_env.setenv("TETHER_JWKS_CACHE_SECONDS", "1")
    runtime.reset()
    token = sign(claims(), keys.es256, "ES256", kid=keys.es256_kid)
    assert _connect(with_query(ws_event("connect", "before="), token=token))["statusCode"] == 200
    assert (resolver.asked, jwks.fetches) == (1, 1)
    resolver.hanging = True
    time.sleep(1.2)  # the key set expires from the cache: the next token fetches it
    started = time.monotonic()
    assert _connect(with_query(ws_event("connect", "kept="), token=token))["statusCode"] == 200
    assert time.monotonic() - started < 2.5
    assert (resolver.asked, jwks.fetches) == (2, 1)
    assert "signing keys unavailable" in capsys.readouterr().out

    runtime.reset()  # a new container: no keys kept
    started = time.monotonic()
    response = _connect(with_query(ws_event("connect", "none-kept="), token=token))
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["error"] == "signing_keys_unavailable"
    assert time.monotonic() - started < 2.5
    assert resolver.asked == 3

    # The resolver answering again, the issuer's keys verify again.
    resolver.hanging = False
    assert _connect(with_query(ws_event("connect", "after="), token=token))["statusCode"] == 200
    assert jwks.fetches == 2
    assert len(_sessions(db)) == 3


def test_the_fetch_over_tls_keeps_its_time_in_all_and_checks_the_certificate(
    keys: SigningKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issuer is reached over https: its certificate is checked against the trusted
    ones (one nobody vouches for is the issuer's failure, 503), and an answer a byte at a
    time over TLS gets the fetch's timeout in all too."""
    server = JwksServer(keys, tls_dir=tmp_path)
    with server.running():
        payload = claims()
        token = sign(payload, keys.es256, "ES256", kid=keys.es256_kid)
        with pytest.raises(SigningKeysUnavailableError):
            _verifier(server, payload, jwks_timeout_seconds=1).verify(token)
        assert server.certificate is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(server.certificate))
        verifier = _verifier(server, payload, jwks_cache_seconds=1, jwks_timeout_seconds=1)
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        server.drip = "body"
        time.sleep(1.2)  # the key set expires from the cache: the next token fetches it
        started = time.monotonic()
        assert verifier.verify(token).user_id == uuid.UUID(payload["sub"])
        assert time.monotonic() - started < 3
        assert server.fetches == 2


def test_an_answer_too_long_for_a_key_set_is_the_issuers_failure(keys: SigningKeys) -> None:
    """A key set is a few KB: an answer past 1 MiB is not read to its end (nor held in
    memory) but taken for the issuer's failure, 503 with no keys kept."""
    server = JwksServer(keys)
    with server.running():
        payload = claims()
        verifier = _verifier(server, payload)
        server.answer = b" " * MAX_JWKS_BYTES + json.dumps(keys.jwks()).encode()
        with pytest.raises(SigningKeysUnavailableError):
            verifier.verify(sign(payload, keys.es256, "ES256", kid=keys.es256_kid))


@pytest.mark.usefixtures("lambda_env")
def test_hs256_signed_with_a_public_key_fails_the_secret_too(db: Conn, keys: SigningKeys) -> None:
    pem = keys.rs256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    response = _connect(
        with_query(ws_event("connect", "confused="), token=_hs256_with_key(claims(), pem))
    )
    assert response["statusCode"] == 401
    assert _sessions(db) == []


@pytest.mark.usefixtures("lambda_env")
def test_repeated_connect_for_one_connection_keeps_one_row(db: Conn) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    event = with_query(ws_event("connect", "again="), token=token)
    assert _connect(event)["statusCode"] == 200
    assert _connect(event)["statusCode"] == 200
    assert len(_sessions(db)) == 1


def test_database_down_refuses_the_handshake(
    lambda_env: pytest.MonkeyPatch, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_env.setenv("TETHER_DATABASE_URL", with_database(server_url, "tether_is_down"))
    runtime.reset()
    token = sign(claims(), HS256_SECRET, "HS256")
    response = _connect(with_query(ws_event("connect", "nodb="), token=token))
    assert response["statusCode"] == 503
    out = capsys.readouterr().out
    assert any(
        n == "ConnectRejected" and d.get("Cause") == "unavailable" for n, _, d in metrics(out)
    )


def test_anonymous_only_when_enabled(
    lambda_env: pytest.MonkeyPatch, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _connect(ws_event("connect", "anon1="))["statusCode"] == 401
    lambda_env.setenv("TETHER_ALLOW_ANONYMOUS", "true")
    runtime.reset()
    assert _connect(ws_event("connect", "anon2="))["statusCode"] == 200
    [row] = _sessions(db)
    assert row["connection_id"] == "anon2=" and row["user_id"] is None
    # No user is not a user named "": the API and SessionEnded say null.
    [opened] = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"session opened"' in line
    ]
    assert opened.get("user_id") is None  # left out, as Powertools leaves out a null
    # A token that is presented is still verified.
    assert _connect(with_query(ws_event("connect", "anon3="), token="garbage"))["statusCode"] == 401


def test_missing_configuration_refuses_and_names_the_setting(
    lambda_env: pytest.MonkeyPatch, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_env.delenv("TETHER_JWT_SECRET")
    runtime.reset()
    response = _connect(ws_event("connect", "misconfigured="))
    assert response["statusCode"] == 500
    assert "TETHER_JWKS_URL" in capsys.readouterr().out
    assert _sessions(db) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("TETHER_JWKS_CACHE_SECONDS", "0.5"), ("TETHER_JWKS_URL", "x.supabase.co/jwks.json")],
)
def test_key_settings_the_token_library_cannot_take_refuse_and_name_the_setting(
    lambda_env: pytest.MonkeyPatch,
    db: Conn,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
) -> None:
    # Anonymous or not, every $connect builds the verifier: it failed untyped, past the
    # handler's answer.
    lambda_env.setenv("TETHER_ALLOW_ANONYMOUS", "true")
    lambda_env.setenv("TETHER_JWKS_URL", "https://keys.example.invalid/jwks.json")
    lambda_env.setenv(name, value)
    runtime.reset()
    response = _connect(ws_event("connect", "keys-misconfigured="))
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"] == "misconfigured"
    assert name in capsys.readouterr().out
    assert _sessions(db) == []


SHORT_SECRET = "short-hs256-secret-0123456789ab"  # 31 bytes: one short of HS256's 256 bits


@pytest.mark.parametrize("kept", ["value", "ssm"])
def test_a_short_hs256_secret_refuses_every_handshake_and_names_the_setting(
    lambda_env: pytest.MonkeyPatch,
    db: Conn,
    aws: str,
    capsys: pytest.CaptureFixture[str],
    kept: str,
) -> None:
    """A token signed with a secret that short verified: anyone who guessed the secret
    from one token could sign their own, for any user."""
    import boto3  # noqa: PLC0415

    setting = SHORT_SECRET
    if kept == "ssm":
        boto3.client("ssm", endpoint_url=aws).put_parameter(
            Name="/tether/short-jwt", Value=SHORT_SECRET, Type="SecureString"
        )
        setting = "ssm:/tether/short-jwt"
    lambda_env.setenv("TETHER_JWT_SECRET", setting)
    runtime.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT's own warning of a short key
        token = sign(claims(), SHORT_SECRET, "HS256")
    response = _connect(with_query(ws_event("connect", "short-secret="), token=token))
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"] == "misconfigured"
    out = capsys.readouterr().out
    assert "TETHER_JWT_SECRET" in out and "at least 32 bytes" in out
    assert SHORT_SECRET not in out + response["body"]
    assert _sessions(db) == []


def test_connect_module_does_not_import_boto3_or_supabase() -> None:
    code = (
        "import sys, functions.connect as c; "
        # Powertools reads botocore's bare package version; its clients must not load.
        "print(sorted(m for m in ('boto3', 'botocore.client', 'supabase', 'postgrest')"
        " if m in sys.modules))"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_connect_module_builds_none_of_the_sweeps_or_operators_models() -> None:
    # Each pydantic model built is cold start time; no WebSocket handler reads these.
    # Every model of the module they live in, so that one added there is held to it too.
    sweep_and_operator_models = {
        name
        for name, value in vars(sweep_and_admin_models).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == sweep_and_admin_models.__name__
    }
    assert len(sweep_and_operator_models) >= 9
    code = (
        "import functions.connect, pydantic\n"
        "def built(model):\n"
        "    for sub in model.__subclasses__():\n"
        "        yield sub\n"
        "        yield from built(sub)\n"
        "print(' '.join(sorted({m.__name__ for m in built(pydantic.BaseModel)})))\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    built = set(result.stdout.split())
    assert {"Settings", "WebSocketEvent", "OpenSessionRequest", "OpenedSession"} <= built
    assert built.isdisjoint(sweep_and_operator_models), built & sweep_and_operator_models


@pytest.mark.usefixtures("lambda_env")
def test_a_reused_connection_id_whose_session_ended_is_refused(db: Conn) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    event = with_query(ws_event("connect", "reused="), token=token)
    assert _connect(event)["statusCode"] == 200
    db.execute("select public.tether_end_session_v2('reused=', 'client_disconnect')")
    response = _connect(event)
    # Accepting would leave a live connection with no active row behind it.
    assert response["statusCode"] == 409
    assert json.loads(response["body"])["error"] == "conflict"
    [row] = _sessions(db)
    assert row["is_active"] is False


@pytest.mark.usefixtures("lambda_env")
@pytest.mark.parametrize(
    ("context", "headers", "stored_agent"),
    [
        ({"connectedAt": 10**18}, {}, "Mozilla/5.0 (X11; Linux x86_64) tether-tests"),
        ({"connectedAt": 5}, {}, "Mozilla/5.0 (X11; Linux x86_64) tether-tests"),
        (
            {"identity": {"sourceIp": "203.0.113.10", "userAgent": "agent\ud800x"}},
            {},
            "agent\ufffdx",
        ),
        ({"identity": {"sourceIp": "203.0.113.10", "userAgent": "nul\x00byte"}}, {}, "nulbyte"),
        ({"identity": {"sourceIp": "203.0.113.10"}}, {"User-Agent": "x" * 5000}, "x" * 1024),
    ],
    ids=["connectedAt-beyond-datetime", "connectedAt-before-2015", "lone-surrogate", "nul", "5kb"],
)
def test_odd_but_possible_input_opens_the_session_and_stores_what_can_be_stored(
    db: Conn, context: dict[str, Any], headers: dict[str, str], stored_agent: str
) -> None:
    token = sign(claims(), HS256_SECRET, "HS256")
    event = with_query(ws_event("connect", "odd="), token=token)
    event["requestContext"].update(context)
    event["headers"].update(headers)
    if headers:
        event["headers"].pop("User-Agent", None)
        event["headers"]["User-Agent"] = headers["User-Agent"]
    response = _connect(event)
    assert response["statusCode"] == 200, response
    [row] = _sessions(db)
    assert row["user_agent"] == stored_agent
    start = row["session_start"]
    assert isinstance(start, datetime)
    assert abs((datetime.now(UTC) - start).total_seconds()) < 60  # an impossible time: now


def test_clock_skew_within_the_leeway_is_accepted(lambda_env: pytest.MonkeyPatch, db: Conn) -> None:
    issued_ahead = claims(iat=int(time.time()) + 2, nbf=int(time.time()) + 2)
    token = sign(issued_ahead, HS256_SECRET, "HS256")
    assert _connect(with_query(ws_event("connect", "skew="), token=token))["statusCode"] == 200
    # The same skew with no leeway is refused: the setting reaches the verifier.
    lambda_env.setenv("TETHER_JWT_LEEWAY_SECONDS", "0")
    runtime.reset()
    issued_ahead = claims(iat=int(time.time()) + 2, nbf=int(time.time()) + 2)
    token = sign(issued_ahead, HS256_SECRET, "HS256")
    response = _connect(with_query(ws_event("connect", "skew2="), token=token))
    assert response["statusCode"] == 401
    assert json.loads(response["body"])["message"] == "not_yet_valid"


def test_a_token_nobody_can_verify_is_logged_as_ignored(
    lambda_env: pytest.MonkeyPatch, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    lambda_env.delenv("TETHER_JWT_SECRET")
    lambda_env.setenv("TETHER_ALLOW_ANONYMOUS", "true")
    runtime.reset()
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJnYXJiYWdlIn0.c2lnbmF0dXJlLWZvcmdlZA"
    assert _connect(with_query(ws_event("connect", "ign="), token=token))["statusCode"] == 200
    out = capsys.readouterr().out
    assert "no verification is configured" in out
    assert token not in out


def test_a_database_url_libpq_cannot_parse_never_reaches_the_logs(
    lambda_env: pytest.MonkeyPatch, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in (
        "postgress://tether:hunter2-pass@db.example.com/postgres",
        " postgresql://tether:hunter2-pass@db.example.com:notaport/postgres",
    ):
        lambda_env.setenv("TETHER_DATABASE_URL", bad)
        runtime.reset()
        token = sign(claims(), HS256_SECRET, "HS256")
        response = _connect(with_query(ws_event("connect", "leak="), token=token))
        assert response["statusCode"] >= 500
        captured = capsys.readouterr()
        assert "hunter2-pass" not in captured.out + captured.err + json.dumps(response)
