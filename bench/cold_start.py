"""``connect_cold_start``: what a cold ``$connect`` container pays before it answers.

Workload, each step in a fresh interpreter, interleaved with its baseline, repeated:

1. import: ``import functions.connect``, against ``from supabase import create_client;
   import boto3`` (the obvious stack for the same job). Goal: <= 0.35.
2. import and a first invocation: settings from the environment, a token verified
   (HS256, signature, expiry, audience, issuer), the database connection opened and
   the session opened, through ``functions.connect.lambda_handler``; against the same
   steps on that stack: import both, ``create_client``, an EventBridge client, the same
   token check (PyJWT), and the same SQL function through supabase-py's ``rpc()`` (to a
   local stand-in for PostgREST that runs it on the same database).

Each figure is the interpreter's wall time less an empty interpreter's. The timed
interpreters write no bytecode (each would otherwise differ from the one before), so
tether's and the functions' modules are compiled first, as the baseline's installed
packages were when installed: a module whose bytecode was missing or stale was compiled
again in every timed interpreter, and counted as tether's import.
"""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from bench.common import Entry, Run, entry, report, spread
from bench.database import scratch_database

SECRET = "bench-jwt-secret-with-at-least-thirty-two-characters"  # noqa: S105 - a test key for a local run
ISSUER = "https://bench.supabase.co/auth/v1"
IMPORT_TETHER = "import functions.connect"
IMPORT_BASELINE = "from supabase import create_client; import boto3"

FIRST_TETHER = """
import os, sys, time
from functions import connect
class Context:
    function_name = "bench"; aws_request_id = "r"; memory_limit_in_mb = 256
    def get_remaining_time_in_millis(self): return 30000
now = int(time.time() * 1000)
event = {"requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "stage": "prod",
         "connectedAt": now, "requestTimeEpoch": now, "requestId": "r", "apiId": "a",
         "connectionId": sys.argv[1], "identity": {"sourceIp": "203.0.113.10"}},
         "queryStringParameters": {"token": os.environ["BENCH_TOKEN"]},
         "headers": {"User-Agent": "bench"}, "isBase64Encoded": False}
assert connect.lambda_handler(event, Context())["statusCode"] == 200
"""
FIRST_BASELINE = """
import os, sys
import boto3, jwt
from supabase import create_client
client = create_client(os.environ["SUPABASE_URL"], os.environ["BENCH_SERVICE_KEY"])
events = boto3.client("events", region_name="us-east-1")
claims = jwt.decode(os.environ["BENCH_TOKEN"], os.environ["TETHER_JWT_SECRET"],
                    algorithms=["HS256"], audience="authenticated",
                    issuer=os.environ["TETHER_JWT_ISSUER"])
rows = client.rpc("tether_open_session_v1", {"p_connection_id": sys.argv[1],
                  "p_user_id": claims["sub"], "p_source_ip": "203.0.113.10",
                  "p_user_agent": "bench", "p_api_id": "a", "p_stage": "prod"}).execute()
assert rows.data[0]["opened"]
"""


ROOT = Path(__file__).resolve().parent.parent


def compile_sources(root: Path = ROOT) -> None:
    """Current bytecode for every module of ``functions`` and ``tether`` (only what is
    missing or stale is compiled)."""
    for folder in ("functions", "tether"):
        if not compileall.compile_dir(root / folder, quiet=1):
            raise RuntimeError(f"{folder}: a module does not compile")


def _token(role: str = "authenticated") -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "role": role,
        "aud": "authenticated",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _seconds(code: str, env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *args], check=True, env=env, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def run(mode: Run) -> dict[str, Entry]:
    from tests import postgrest_standin  # noqa: PLC0415 - the test suite's PostgREST stand-in

    repeats = mode.pick(7, 3)
    compile_sources()
    with scratch_database("cold") as url, postgrest_standin.serve(url, SECRET) as supabase_url:
        env = {
            **os.environ,
            "TETHER_DATABASE_URL": url,
            "TETHER_JWT_SECRET": SECRET,
            "TETHER_JWT_ISSUER": ISSUER,
            "SUPABASE_URL": supabase_url,
            "BENCH_SERVICE_KEY": _token("service_role"),
            "BENCH_TOKEN": _token(),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        empty, imports, import_base, firsts, first_base = [], [], [], [], []
        for _ in range(repeats):
            empty.append(_seconds("pass", env))
            imports.append(_seconds(IMPORT_TETHER, env))
            import_base.append(_seconds(IMPORT_BASELINE, env))
            firsts.append(_seconds(FIRST_TETHER, env, f"t{uuid.uuid4().hex[:12]}="))
            first_base.append(_seconds(FIRST_BASELINE, env, f"b{uuid.uuid4().hex[:12]}="))
    nothing = sorted(empty)[len(empty) // 2]
    imports = [s - nothing for s in imports]
    import_base = [s - nothing for s in import_base]
    firsts = [s - nothing for s in firsts]
    first_base = [s - nothing for s in first_base]
    import_ratios = [a / b for a, b in zip(imports, import_base, strict=True)]
    first_ratios = [a / b for a, b in zip(firsts, first_base, strict=True)]
    ratio = spread(import_ratios, 3)
    first_ratio = spread(first_ratios, 3)
    report(
        f"cold start  import {spread(imports, 3)['median'] * 1000:.0f} ms vs"
        f" {spread(import_base, 3)['median'] * 1000:.0f} ms: ratio {ratio['median']:.2f};"
        f" with a first invocation {spread(firsts, 3)['median'] * 1000:.0f} ms vs"
        f" {spread(first_base, 3)['median'] * 1000:.0f} ms: ratio {first_ratio['median']:.2f}"
    )
    result = entry(
        f"fresh interpreters, {repeats} interleaved repeats: import functions.connect, and"
        " import plus a first invocation (settings, HS256 token check, database connection,"
        " open), against supabase.create_client + boto3 doing the same",
        measured={
            "import_seconds": spread(imports, 4),
            "import_and_first_invocation_seconds": spread(firsts, 4),
        },
        baseline={
            "import_seconds": spread(import_base, 4),
            "import_and_first_invocation_seconds": spread(first_base, 4),
            "empty_interpreter_seconds": round(nothing, 4),
        },
        ratio=ratio["median"],
        goal="<= 0.35",
        notes="ratio: the import's; first_invocation_ratio: import and first invocation",
    )
    result["ratio_spread"] = ratio
    result["first_invocation_ratio"] = first_ratio
    result["spread_note"] = (
        f"{ratio['min']:.2f}-{ratio['max']:.2f}; first invocation {first_ratio['median']:.2f}"
    )
    return {"connect_cold_start": result}
