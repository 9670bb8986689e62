"""Helpers shared by the tests: events, a Lambda context, tokens, a JWKS server, EMF."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal

import jwt
import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

EVENTS = Path(__file__).parent / "events"
TETHER = str(Path(sys.executable).with_name("tether"))
"""The console script of the tether under test."""


def run_tether(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    inherit_settings: bool = True,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """A tether command run as an operator runs it, its output captured. The test
    process's database URL is never inherited (each test names its own database);
    without ``inherit_settings``, no other TETHER_ setting is either."""
    dropped = {"DATABASE_URL", "TETHER_DATABASE_URL"}
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and (inherit_settings or not name.startswith("TETHER_"))
    }
    return subprocess.run(  # noqa: S603 - our own console script
        [TETHER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**clean, **(env or {})},
    )


def load_event(name: str, **context_overrides: Any) -> dict[str, Any]:
    """An event file from tests/events, with requestContext fields overridden."""
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    if context_overrides and "requestContext" in event:
        event["requestContext"].update(context_overrides)
    return event


def ws_event(name: str, connection_id: str, **context_overrides: Any) -> dict[str, Any]:
    """A WebSocket event for one connection, connected now."""
    event = load_event(name, connectionId=connection_id, **context_overrides)
    event["requestContext"].setdefault("connectedAt", int(time.time() * 1000))
    if "connectedAt" not in context_overrides:
        event["requestContext"]["connectedAt"] = int(time.time() * 1000)
    return event


def with_query(event: dict[str, Any], **params: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["queryStringParameters"] = {**(event.get("queryStringParameters") or {}), **params}
    return event


def with_headers(event: dict[str, Any], **headers: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["headers"] = {**(event.get("headers") or {}), **headers}
    return event


@dataclass
class FakeLambdaContext:
    """The attributes handlers and Powertools read, with a real countdown."""

    function_name: str = "tether-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:tether-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time_limit_seconds: float = 30.0
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        remaining = self.time_limit_seconds - (time.monotonic() - self._started)
        return max(0, int(remaining * 1000))


# --- tokens --------------------------------------------------------------------

ISSUER = "https://tetherproject.supabase.co/auth/v1"
AUDIENCE = "authenticated"
HS256_SECRET = "legacy-jwt-secret-with-at-least-thirty-two-characters"


@dataclass
class SigningKeys:
    """An ES256 and an RS256 key pair, published as a JWKS."""

    es256: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rs256: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    es256_kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    rs256_kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def jwks(self) -> dict[str, Any]:
        es = json.loads(ECAlgorithm.to_jwk(self.es256.public_key()))
        rs = json.loads(RSAAlgorithm.to_jwk(self.rs256.public_key()))
        es.update(kid=self.es256_kid, alg="ES256", use="sig")
        rs.update(kid=self.rs256_kid, alg="RS256", use="sig")
        return {"keys": [es, rs]}


def claims(
    *,
    sub: str | None = None,
    role: str = "authenticated",
    aud: str = AUDIENCE,
    iss: str = ISSUER,
    expires_in: int = 3600,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub or str(uuid.uuid4()),
        "role": role,
        "aud": aud,
        "iss": iss,
        "iat": now,
        "exp": now + expires_in,
        "session_id": str(uuid.uuid4()),
        **extra,
    }


def sign(payload: dict[str, Any], key: Any, algorithm: str, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that vouches for itself, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    address = x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(address, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "certificate.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class JwksServer:
    """Serves a JWKS over real HTTP (over TLS with ``tls_dir``: its certificate is then
    ``certificate``, for the client to trust) and counts the fetches."""

    def __init__(self, keys: SigningKeys, *, tls_dir: Path | None = None) -> None:
        self.keys = keys
        self.fetches = 0
        self.answer: bytes | None = None
        """A body to answer instead of the key set (an issuer answering garbage)."""
        self.drip: Literal["headers", "body"] | None = None
        """Where the answer slows to one byte every ``drip_seconds``, for ``drip_bytes``
        bytes (a header's value, or white space before the body), before the rest."""
        self.drip_seconds = 0.4
        self.drip_bytes = 10
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                server.fetches += 1
                body = server.answer
                if body is None:
                    body = json.dumps(server.keys.jwks()).encode()
                if server.drip is not None:
                    self._drip(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drip(self, body: bytes) -> None:
                slow = (b"." if server.drip == "headers" else b" ") * server.drip_bytes
                if server.drip == "body":
                    body = slow + body  # JSON allows white space before its value
                head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                head += b"Content-Length: %d\r\n" % len(body)
                if server.drip == "headers":
                    before, after = head + b"X-Slow: ", b"\r\n\r\n" + body
                else:
                    before, after = head + b"\r\n", body[len(slow) :]
                try:
                    self.wfile.write(before)
                    for byte in slow:
                        time.sleep(server.drip_seconds)
                        self.wfile.write(bytes([byte]))
                    self.wfile.write(after)
                except OSError:
                    pass  # the client gave up

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        self.certificate: Path | None = None
        if tls_dir is not None:
            self.certificate, key_file = self_signed_certificate(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certificate, key_file)
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            scheme = "https"
        port = self._http.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{port}/auth/v1/.well-known/jwks.json"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
            thread.join()


# --- logs and metrics ------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def metrics(text: str) -> list[tuple[str, float, dict[str, str]]]:
    """(name, value, dimensions) for every EMF metric in captured stdout."""
    found: list[tuple[str, float, dict[str, str]]] = []
    for line in json_lines(text):
        meta = line.get("_aws")
        if not meta:
            continue
        for directive in meta["CloudWatchMetrics"]:
            dims = {d: line[d] for group in directive["Dimensions"] for d in group}
            for metric in directive["Metrics"]:
                value = line[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                found.extend((metric["Name"], float(v), dims) for v in values)
    return found


# --- the table a team already has ----------------------------------------------

ORIGIN_TABLE = """
create table public.conversation_sessions (
  session_id uuid primary key default gen_random_uuid(),
  user_id uuid,
  is_active boolean default true,
  session_start timestamptz default now(),
  session_end timestamptz,
  ended_at timestamptz,
  duration_seconds double precision,
  agent_id text,
  metadata jsonb
)
"""
"""The origin report's table, as the old server created it, with two application columns."""


def functions_reading_temporary_types(conn: Any) -> tuple[list[str], list[str]]:
    """tether's functions (its schema's, and public's tether_*), and those of them whose
    search_path lets a caller's temporary types be read first. Every one counts, not only
    those running with their owner's rights: a helper they call runs with those rights."""
    rows = conn.execute(
        "select p.oid::regprocedure::text as signature,"
        "       coalesce(p.proconfig, '{}') as config"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where p.prokind in ('f', 'p')"
        "   and (n.nspname = 'tether' or (n.nspname = 'public' and p.proname like 'tether\\_%%'))"
    ).fetchall()
    signatures = [(row["signature"], row["config"]) for row in rows]
    loose = [s for s, config in signatures if "search_path=pg_catalog, pg_temp" not in config]
    return [s for s, _config in signatures], loose


def _server_processes(data_dir: Path) -> list[psutil.Process]:
    postmaster = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


def thaw(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError, psutil.Error):
        for process in _server_processes(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)


THAWED_AFTER_SECONDS = 20.0
"""However the test goes: a call that waits for the thaw returns then, and fails the
test by how long it waited, instead of hanging it."""


@contextlib.contextmanager
def frozen(data_dir: Path) -> Iterator[None]:
    """The Postgres of ``data_dir`` stopped with SIGSTOP, every process of it: its
    kernel still acknowledges every byte, so no TCP timeout fires."""
    processes = _server_processes(data_dir)
    thaw_later = threading.Timer(THAWED_AFTER_SECONDS, thaw, (data_dir,))
    for process in processes:
        # A backend may end between the listing and here (one serving a client that
        # just left): nothing to stop there.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)
    thaw_later.start()
    try:
        yield
    finally:
        thaw_later.cancel()
        thaw(data_dir)
