"""A small HTTP stand-in for PostgREST's ``POST /rest/v1/rpc/<function>``.

It is not PostgREST: it does just enough of what PostgREST does for an rpc call
(look the function up by name, cast each JSON argument to the declared type,
run it as the role named by the bearer token, answer rows as a JSON array,
errors as ``{"code", "message", "details", "hint"}`` with status 400, and 503
``PGRST001`` while the database cannot be reached) to let
supabase-py drive tether's SQL functions on the test's real database. With
``max_rows`` it cuts each answer to that many rows after the function has run whole,
as PostgREST's ``db-max-rows`` does (Supabase's "Max rows", 1000 by default), and
says the whole count in ``Content-Range`` (206 when cut) only when asked with
``Prefer: count=exact``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
from psycopg import sql

RPC_PREFIX = "/rest/v1/rpc/"


def _argument_types(conn: psycopg.Connection[Any], function: str) -> dict[str, str] | None:
    row = conn.execute(
        """
        select coalesce(p.proargnames, '{}'),
               array(select format_type(t, null) from unnest(p.proargtypes) t)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and p.proname = %s
        """,
        (function,),
    ).fetchone()
    if row is None:
        return None
    names, types = row
    return dict(zip(names, types, strict=False))


def _handler_for(
    database_url: str, jwt_secret: str, max_rows: int | None
) -> type[BaseHTTPRequestHandler]:
    class RpcHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read results, not access logs."""

        def _reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            if not self.path.startswith(RPC_PREFIX):
                self._reply(404, {"code": "PGRST000", "message": "not found"})
                return
            function = self.path[len(RPC_PREFIX) :].split("?")[0]
            token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            try:
                role = jwt.decode(
                    token,
                    jwt_secret,
                    algorithms=["HS256"],
                    audience=None,
                    options={"verify_aud": False},
                )["role"]
            except jwt.PyJWTError:
                self._reply(401, {"code": "PGRST301", "message": "JWT invalid"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            args: dict[str, object] = json.loads(self.rfile.read(length) or b"{}")
            try:
                conn = psycopg.connect(database_url)
            except psycopg.OperationalError:
                # What PostgREST answers while its database cannot be reached.
                self._reply(
                    503, {"code": "PGRST001", "message": "Database client error. Retrying."}
                )
                return
            try:
                with conn:
                    types = _argument_types(conn, function)
                    if types is None or not set(args) <= set(types):
                        self._reply(
                            404,
                            {
                                "code": "PGRST202",
                                "message": f"Could not find the function public.{function}",
                            },
                        )
                        return
                    call = sql.SQL(
                        "select coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) from {}({}) r"
                    ).format(
                        sql.Identifier("public", function),
                        sql.SQL(", ").join(
                            sql.SQL("{} => {}::{}").format(
                                sql.Identifier(name), sql.Placeholder(name), sql.SQL(types[name])
                            )
                            for name in args
                        ),
                    )
                    # A JSON argument is passed on as its text, as PostgREST does.
                    values = {
                        name: json.dumps(value)
                        if types[name] in ("json", "jsonb") and value is not None
                        else value
                        for name, value in args.items()
                    }
                    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                    row = conn.execute(call, values).fetchone()
            except psycopg.Error as exc:
                self._reply(
                    400,
                    {
                        "code": exc.sqlstate,
                        "message": exc.diag.message_primary,
                        "details": exc.diag.message_detail,
                        "hint": exc.diag.message_hint,
                    },
                )
                return
            rows: list[object] = row[0] if row else []
            self._reply(*self._cut(rows))

        def _cut(self, rows: list[object]) -> tuple[int, object, dict[str, str]]:
            total = len(rows)
            if max_rows is not None:
                rows = rows[:max_rows]
            span = f"0-{len(rows) - 1}" if rows else "*"
            if "count=exact" not in self.headers.get("Prefer", ""):
                return 200, rows, {"Content-Range": f"{span}/*"}
            status = 206 if len(rows) < total else 200
            return status, rows, {"Content-Range": f"{span}/{total}"}

    return RpcHandler


@contextmanager
def serve(database_url: str, jwt_secret: str, *, max_rows: int | None = None) -> Iterator[str]:
    """Serve the stand-in on a free loopback port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(database_url, jwt_secret, max_rows))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
