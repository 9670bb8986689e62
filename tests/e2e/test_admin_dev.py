"""The operators' API and live page in `tether dev`: served under /admin on the
gateway's port with the key it prints, forced closes that reach real WebSocket
clients through the local gateway's @connections DELETE, and the page in headless
Chromium showing the numbers the API returns."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT
from tests.e2e.conftest import DevServer
from tests.support import HS256_SECRET, claims, json_lines, sign
from tether.durations import describe_seconds

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / ".tether" / "artifacts"
DELETED_REASON = "Connection closed by the @connections API"


def _key(server: DevServer) -> str:
    match = re.search(r"^  operator key  (\S+)$", server.log.read_text(), re.MULTILINE)
    assert match, server.log.read_text()
    return match.group(1)


def _call(
    server: DevServer, method: str, path: str, key: str | None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/admin{path}", method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


async def _client(server: DevServer, user: uuid.UUID) -> ClientConnection:
    token = sign(claims(sub=str(user)), HS256_SECRET, "HS256")
    return await connect(f"{server.ws_url}/?token={token}", ping_interval=None)


async def _closed_by_server(ws: ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), timeout=10)
    frame = closed.value.rcvd
    return (frame.code, frame.reason) if frame else (None, None)


def test_the_key_printed_at_start_opens_the_api_and_nothing_else_does(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    status, headers, _ = _call(server, "GET", "/sessions?active=true", None)
    assert (status, headers["content-type"]) == (401, "application/problem+json")
    assert _call(server, "GET", "/sessions?active=true", key)[0] == 200
    assert _call(server, "GET", "/health", None)[2]["status"] == "ok"
    # A wrong path is told where the routes are listed, under this prefix; under the
    # live page's static files too, which are mounted apart.
    for wrong in ("/nowhere", "/dashboard/static/nowhere.js"):
        status, _, problem = _call(server, "GET", wrong, key)
        assert (status, problem["detail"]) == (
            404,
            "no route serves this path; /admin/openapi.json lists them",
        )
    assert _call(server, "GET", "/openapi.json", None)[0] == 200
    # A slash too many is a 404 that says so, not a redirect built from the Host header.
    status, headers, problem = _call(server, "GET", "/sessions/", key)
    assert (status, problem["detail"]) == (
        404,
        "no route serves this path: drop its trailing slash; /admin/openapi.json lists them",
    )
    assert "Location" not in headers
    # The prefix alone still leads to the live page.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/admin")
    answer = connection.getresponse()
    assert (answer.status, answer.getheader("Location")) == (307, "/admin/dashboard")
    connection.close()
    # HEAD wherever GET is served: its status and headers, no body.
    for path, with_key in (("/sessions", key), ("/sessions", None), ("/openapi.json", None)):
        get_status, get_headers, _ = _call(server, "GET", path, with_key)
        status, headers, body = _call(server, "HEAD", path, with_key)
        assert (status, body) == (get_status, None), path
        assert headers["content-length"] == get_headers["content-length"], path
    log = server.log.read_text()
    assert f"/admin/dashboard#key={key}" in log
    assert f'curl -H "Authorization: Bearer {key}"' in log


@pytest.mark.parametrize("variable", ["TETHER_OPERATOR_KEY", "tether_operator_key"])
def test_the_banner_s_lines_work_as_a_shell_reads_them_with_a_key_of_yours(
    start_dev: Callable[..., DevServer], variable: str
) -> None:
    """Single quotes kept the shell from putting TETHER_OPERATOR_KEY in (401), and a
    shell could glob the unquoted URL's '?'. The key itself is named, never shown; the
    gateway's limits are said too."""
    key = "an-operator-key-of-mine-0123"
    server = start_dev(
        "--sweep-interval",
        "1h",
        "--handshake-timeout",
        "2s",
        "--message-rate",
        "5",
        env_extra={variable: key},
    )
    log = server.log.read_text()
    assert key not in log
    assert "handshakes within 2s, 5 messages/s per connection" in log
    [line] = re.findall(r"^  API +curl (.*)$", log, re.MULTILINE)
    words = subprocess.run(  # noqa: S603 - the banner's own line, as a user's shell reads it
        ["sh", "-c", f"for word in {line}; do printf '%s\\0' \"$word\"; done"],  # noqa: S607
        capture_output=True, text=True, check=True, env={variable: key},
    ).stdout.split("\0")[:-1]  # fmt: skip
    assert words[0] == "-H" and len(words) == 3, words
    name, value = words[1].split(": ", 1)
    assert words[2].startswith(f"http://127.0.0.1:{server.port}/")
    request = urllib.request.Request(words[2])  # noqa: S310 - checked above
    request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200
    [page] = re.findall(r"^  live page +(\S+)", log, re.MULTILINE)
    assert "key=" not in page


def test_a_client_that_hangs_up_mid_request_is_no_error_in_the_log(
    start_dev: Callable[..., DevServer],
) -> None:
    """A request its client gave up on before it was read (a tab closed, the live page
    ending a refresh whose sibling failed) was logged as an unexpected error, with a
    traceback, twice: as if tether had a bug."""
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        # A body shorter than its length says: the server waits for the rest.
        client.sendall(
            f"GET /admin/stats/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: 10\r\n\r\n{{}}".encode()
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while not re.search(r"client gone|unexpected error", server.log.read_text()):
        assert time.monotonic() < deadline, server.log.read_text()[-3000:]
        time.sleep(0.1)
    assert _call(server, "GET", "/stats/live", key)[0] == 200
    said = json_lines(server.log.read_text())
    assert [line["message"] for line in said if line.get("level") == "ERROR"] == []


def test_a_forced_close_reaches_the_client_and_ends_the_row_once(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    user = uuid.uuid4()

    async def scenario() -> None:
        ws = await _client(server, user)
        [row] = server.wait_for(lambda r: len(r) == 1)
        status, _, presence = await asyncio.to_thread(
            _call, server, "GET", f"/users/{user}/presence", key
        )
        assert (status, presence["online"]) == (200, True)
        assert presence["connections"][0]["connection_id"] == row["connection_id"]

        status, _, closed = await asyncio.to_thread(
            _call, server, "POST", f"/sessions/{row['session_id']}/close", key
        )
        assert status == 200, closed
        assert (closed["outcome"], closed["connection"]) == ("closed", "disconnected")
        # The client hears API Gateway's close for a deleted connection.
        assert await _closed_by_server(ws) == (1001, DELETED_REASON)

    asyncio.run(scenario())

    # The $disconnect the close caused ran, and found the session already ended: the
    # first end wins.
    def disconnect_ran(rows: list[dict[str, Any]]) -> bool:
        return any(
            line.get("message") == "nothing to end"
            and line.get("outcome") == "already_ended"
            and line.get("connection_id") == rows[0]["connection_id"]
            for line in json_lines(server.log.read_text())
        )

    [row] = server.wait_for(disconnect_ran)
    assert (row["end_reason"], row["disconnect_status_code"]) == ("forced_close", None)
    assert row["announced_at"] is not None

    status, _, again = _call(server, "POST", f"/sessions/{row['session_id']}/close", key)
    assert (status, again["outcome"], again["connection"]) == (
        200,
        "already_closed",
        "already_gone",
    )
    assert _call(server, "GET", f"/users/{user}/presence", key)[2]["online"] is False


def test_disconnecting_a_user_closes_each_of_their_clients_only(
    start_dev: Callable[..., DevServer],
) -> None:
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    user, other = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        mine = [await _client(server, user), await _client(server, user)]
        theirs = await _client(server, other)
        server.wait_for(lambda r: len(r) == 3)
        status, _, result = await asyncio.to_thread(
            _call, server, "POST", f"/users/{user}/disconnect", key
        )
        assert (status, result["closed"]) == (200, 2), result
        for ws in mine:
            assert await _closed_by_server(ws) == (1001, DELETED_REASON)
        await theirs.send(json.dumps({"action": "heartbeat"}))
        assert json.loads(await theirs.recv())["status"] == "touched"
        await theirs.close()

    asyncio.run(scenario())
    rows = server.wait_for(lambda r: not any(row["is_active"] for row in r))
    reasons = sorted((str(r["user_id"]) == str(user), r["end_reason"]) for r in rows)
    assert reasons == [(False, "client_disconnect"), (True, "forced_close"), (True, "forced_close")]


# --- the live page in Chromium --------------------------------------------------------


def _chromium_or_skip() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed (`make test` installs it as root with"
            " apt-get; elsewhere: apt-get install chromium): the live page test needs it"
        )
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    return sync_playwright


@contextmanager
def _launched(sync_playwright: Any) -> Iterator[Any]:
    """Debian's Chromium, headless, closed however the test ends."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def test_the_live_page_shows_what_the_api_returns(
    start_dev: Callable[..., DevServer],
) -> None:
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    user = uuid.uuid4()

    async def traffic() -> list[ClientConnection]:
        clients = [await _client(server, user) for _ in range(4)]
        server.wait_for(lambda r: len(r) == 4)
        for ws in clients[:2]:
            await ws.close()
        server.wait_for(lambda r: sum(not row["is_active"] for row in r) == 2)
        live_rows = [r for r in server.rows() if r["is_active"]]
        await asyncio.to_thread(
            _call, server, "POST", f"/sessions/{live_rows[0]['session_id']}/close", key
        )
        await _closed_by_server(clients[2])
        return clients[3:]

    async def main() -> None:
        open_clients = await traffic()
        await asyncio.to_thread(_look, server, key, sync_playwright)
        for ws in open_clients:
            await ws.close()

    asyncio.run(main())


def _look(server: DevServer, key: str, sync_playwright: Any) -> None:
    live = _call(server, "GET", "/stats/live", key)[2]
    daily = _call(server, "GET", "/stats/daily?days=14", key)[2]
    assert (live["active_sessions"], live["ended_last_hour"]) == (1, 3)
    with _launched(sync_playwright) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        sent: list[str] = []
        page.on("request", lambda request: sent.append(request.url))
        [link] = re.findall(r"^  live page +(\S+)$", server.log.read_text(), re.MULTILINE)
        page.goto(link)
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        # The key left the address bar for the tab's sessionStorage, and the link's
        # key reached no server: no request's address holds it.
        assert "key=" not in page.url
        assert len(sent) > 4
        assert [url for url in sent if key in url] == []

        def shown(name: str) -> str:
            return str(page.inner_text(f'[data-metric="{name}"]')).strip()

        assert shown("active_sessions") == str(live["active_sessions"])
        assert shown("ended_last_hour") == str(live["ended_last_hour"])
        assert shown("orphaned_sessions") == str(live["orphaned_sessions"])
        assert shown("unannounced") == str(live["unannounced"])
        # Durations in the commands' words ("10 minutes", "2 hours"), not "10.0 min".
        assert shown("idle_limit") == describe_seconds(live["sweep"]["idle_limit_seconds"])
        assert shown("max_age") == describe_seconds(live["sweep"]["max_age_seconds"])
        for reason, count in live["ended_last_hour_by_reason"].items():
            assert page.inner_text(f'li[data-reason="{reason}"] b') == str(count)
        today = daily["stats"][0]
        assert shown("today_sessions") == str(today["total_sessions"])
        bars = page.locator("#chart rect.bar")
        assert bars.count() == len(daily["stats"])
        drawn = page.get_attribute(f'#chart rect[data-day="{today["day"]}"]', "data-sessions")
        assert drawn == str(today["total_sessions"])
        row = page.locator(f'#days tr[data-day="{today["day"]}"] td')
        assert row.nth(1).inner_text() == str(today["total_sessions"])
        assert row.nth(2).inner_text() == str(today["still_active"])
        assert page.locator("#live tr[data-session-id]").count() == live["active_sessions"]
        assert errors == []

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"dashboard screenshot: {shot}")  # noqa: T201 - the test's artifact

        # A key that is not accepted brings the sign-in form back.
        page.evaluate("sessionStorage.setItem('tether.operatorKey', 'wrong-key-0123456789')")
        page.reload()
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        assert "not accepted" in page.inner_text("#login-error")


# What a row's text may hold once a team's table is adopted, or the service role
# writes it: markup, a script's end, a javascript: address, a right-to-left override,
# zero-width spaces, a terminal's escapes; the page must show each as text.
HOSTILE_TEXTS = [
    '<img src=x onerror="window.__ran = 1">',
    "</script><script>window.__ran = 2</script>",
    "javascript:window.__ran = 3",
    '"><svg onload="window.__ran = 4">',
    "\u202egnp.exe\u202c 10.0.0.1",
    "\u200b" * 40,
    "\x1b[31mred\x1b[0m",
]


def test_a_row_s_text_is_shown_as_text_and_keeps_the_page_s_width(
    start_dev: Callable[..., DevServer],
) -> None:
    sync_playwright = _chromium_or_skip()
    # No client holds these rows' connections: the sweep must not end them meanwhile.
    server = start_dev("--sweep-interval", "1h", "--suspect-after", "1h")
    key = _key(server)
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        # An adopted table's history is checked last (the check is added NOT VALID
        # first): until then a row may hold more than tether would write.
        conn.execute(
            "alter table public.conversation_sessions"
            " drop constraint conversation_sessions_text_sizes_check"
        )
        conn.execute("set role service_role")
        for index, text in enumerate(HOSTILE_TEXTS):
            conn.execute(
                "insert into public.conversation_sessions"
                " (user_id, connection_id, source_ip, user_agent, api_id, stage)"
                " values (%s, %s, %s, %s, %s, %s)",
                (uuid.uuid4(), f"{text[:100]}{index}", text, text, text, text),
            )
        unbroken = "2001:db8:" + "f" * 600
        conn.execute(
            "insert into public.conversation_sessions (connection_id, source_ip, user_agent)"
            " values ('long-one', %s, %s)",
            (unbroken, "B" * 20000),
        )
    with _launched(sync_playwright) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        said: list[str] = []
        page.on("pageerror", lambda error: said.append(str(error)))
        page.on("console", lambda message: said.append(message.text))
        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard?key={key}")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        page.wait_for_timeout(500)
        assert page.evaluate("window.__ran") is None
        assert said == []
        shown = [cell.inner_text() for cell in page.locator("#live td:nth-child(5)").all()]
        assert sorted(shown) == sorted([*HOSTILE_TEXTS, unbroken])
        # However long a row's text, the page keeps to the window's width.
        width = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], width


def test_the_live_page_keeps_to_a_phone_s_width(
    start_dev: Callable[..., DevServer],
) -> None:
    """On a 320 px wide window the sign-in button and the days' table stood past the
    window's edge, the whole page scrolled sideways, the chart's text was too small to
    read, and a row's words were cut in two."""
    sync_playwright = _chromium_or_skip()
    # No client holds the row's connection: the sweep must not end it meanwhile.
    server = start_dev("--sweep-interval", "1h", "--suspect-after", "1h")
    key = _key(server)
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        conn.execute(
            "insert into public.conversation_sessions"
            " (user_id, connection_id, session_start, last_seen_at, source_ip)"
            " values (gen_random_uuid(), 'phone', now() - interval '5 minutes',"
            " now() - interval '4 minutes', '2001:db8:85a3::8a2e:370:7334')"
        )
    with _launched(sync_playwright) as browser:
        page = browser.new_page(viewport={"width": 320, "height": 640})

        def fits() -> bool:
            return bool(
                page.evaluate(
                    "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
                )
            )

        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard")
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        assert fits()
        button = page.locator("#login-form button").bounding_box()
        assert button is not None and button["x"] + button["width"] <= 320, button
        page.fill("#key", key)
        page.click("#login-form button")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        assert fits()
        # The chart's text is still big enough to read (it is drawn 12 px high at
        # 760 px wide: shrunk to the window's width, it was 3 px), its chart scrolled.
        heights = page.evaluate(
            "[...document.querySelectorAll('#chart svg text')]"
            ".map((text) => text.getBoundingClientRect().height)"
        )
        assert heights and min(heights) >= 9, heights
        # No word of a row is cut in two ("5 min|utes ago", "2026-|12-01"): a cell
        # too narrow scrolls its table instead.
        cut = page.evaluate(
            """() => [...document.querySelectorAll('#live td, #days td')].flatMap((td) => {
              const text = td.firstChild;
              if (!text || td.matches('#live td:last-child')) return [];
              let at = 0;
              return text.textContent.split(' ').filter((word) => {
                const range = document.createRange();
                range.setStart(text, at);
                range.setEnd(text, at + word.length);
                at += word.length + 1;
                return range.getClientRects().length > 1;
              });
            })"""
        )
        assert page.locator("#live tr[data-session-id]").count() == 1
        assert cut == []
        # Every column of a day is still there to read, its table scrolled.
        longest = page.locator("#days tr").first.locator("td").last
        longest.scroll_into_view_if_needed()
        box = longest.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 320, box
        assert fits()


def test_the_chart_s_labels_stay_inside_it_however_big_a_day(
    start_dev: Callable[..., DevServer],
) -> None:
    """A day of 120,000 sessions, and an adopted history's session that ends in the
    year 9999: the axes' labels ("200,000", "80,000,000h") stood past the chart's edge,
    read as "00,000", and cut."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        conn.execute("set role service_role")
        conn.execute(
            "insert into public.conversation_sessions (user_id, connection_id, session_start,"
            " last_seen_at, session_end, end_reason)"
            " select gen_random_uuid(), 'day-' || n, now() - interval '3 days',"
            " now() - interval '3 days', now() - interval '3 days' + interval '1 minute',"
            " 'client_disconnect' from generate_series(1, 120000) n"
        )
        conn.execute(
            "insert into public.conversation_sessions (user_id, connection_id, session_start,"
            " last_seen_at, session_end, end_reason) values (gen_random_uuid(), 'ages',"
            " now() - interval '2 days', now() - interval '2 days', '9999-12-30T00:00:00Z',"
            " 'client_disconnect')"
        )
    with _launched(sync_playwright) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard#key={key}")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        assert page.locator("#chart rect[data-sessions='120000']").count() == 1
        outside = page.evaluate(
            """() => {
              const chart = document.querySelector('#chart svg').getBoundingClientRect();
              return [...document.querySelectorAll('#chart svg text')]
                .map((text) => [text.textContent, text.getBoundingClientRect()])
                .filter(([, box]) => box.left < chart.left || box.right > chart.right)
                .map(([label]) => label);
            }"""
        )
        assert outside == []


# Another site's page, as an attacker would host it: the live page and the API in
# frames (to trick a click on "sign out", or one day on a button that ends sessions), a
# form that posts a forced close, and a script that asks the API for sessions.
ATTACKER_PAGE = """<!doctype html><html><body>
<iframe id="page" src="{admin}/dashboard" width="800" height="600"></iframe>
<iframe id="data" src="{admin}/health"></iframe>
<form id="kick" method="post" action="{admin}/sessions/{session_id}/close">
  <input name="key" value="{key}"></form>
<script>
  window.readSessions = fetch("{admin}/sessions?active=true")
    .then((response) => response.text(), (error) => "refused: " + error.message);
  window.kickBlind = fetch("{admin}/sessions/{session_id}/close",
    {{method: "POST", mode: "no-cors", body: "key={key}"}}).then(() => "sent", () => "refused");
</script></body></html>"""


@contextmanager
def _serving(page: str) -> Iterator[str]:
    """A real server for another site's page: one a test fulfils itself is taken by
    Chromium for the public internet, and refused any request to this machine."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    # Port 0: the kernel picks a free one as it binds (none to race for with another worker).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # localhost, not 127.0.0.1: another site than the one tether dev serves.
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_another_site_can_neither_frame_the_page_nor_act_through_it(
    start_dev: Callable[..., DevServer],
) -> None:
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    admin = f"http://127.0.0.1:{server.port}/admin"

    async def main() -> None:
        ws = await _client(server, uuid.uuid4())
        (row,) = server.wait_for(lambda r: len(r) == 1)
        await asyncio.to_thread(attack, str(row["session_id"]))
        assert [r["is_active"] for r in server.rows()] == [True]
        await ws.close()

    def attack(session_id: str) -> None:
        with (
            _serving(ATTACKER_PAGE.format(admin=admin, session_id=session_id, key=key)) as url,
            _launched(sync_playwright) as browser,
        ):
            # The operator signed in, in this browser: what it sees from this origin.
            tabs = browser.new_context()
            page = tabs.new_page()
            seen: list[Any] = []
            # A bound method, not a lambda: playwright marks the handler it is given.
            page.on("response", lambda response: seen.append(response))  # noqa: PLW0108
            page.goto(f"{admin}/dashboard?key={key}")
            page.wait_for_selector("body[data-loaded=true]", timeout=15000)
            ours = [r for r in seen if r.url.startswith(admin)]
            kinds = {r.headers["content-type"].split(";")[0] for r in ours}
            assert {"text/html", "application/json", "image/svg+xml"} <= kinds
            for response in ours:
                headers = response.headers
                assert headers["cache-control"] == "no-store", response.url
                assert headers["x-content-type-options"] == "nosniff", response.url
                assert headers["x-frame-options"] == "DENY", response.url
                assert "frame-ancestors 'none'" in headers["content-security-policy"]
                assert headers["referrer-policy"] == "no-referrer", response.url
                assert "access-control-allow-origin" not in headers, response.url

            # Then another site, in a tab of the same browser.
            elsewhere = tabs.new_page()
            elsewhere.goto(url)
            assert "refused" in elsewhere.evaluate("window.readSessions")
            elsewhere.evaluate("window.kickBlind")
            elsewhere.wait_for_timeout(1000)
            # Neither frame shows what it was asked for: the browser refused both.
            framed = [frame.url for frame in elsewhere.frames if frame.url.startswith(admin)]
            assert framed == []
            with elsewhere.expect_navigation():
                elsewhere.evaluate("document.getElementById('kick').submit()")
            assert "unauthorized" in elsewhere.content()

    asyncio.run(main())


# A fetch that answers late, and counts what is in flight: the page's own requests,
# as a slow or stopped database makes them.
SLOW_FETCH = """
window.__delayMs = 0;
window.__failPath = null;
window.__inflight = 0;
window.__maxInflight = 0;
const realFetch = window.fetch;
window.fetch = (url, init) => {
  window.__inflight += 1;
  window.__maxInflight = Math.max(window.__maxInflight, window.__inflight);
  return new Promise((resolve, reject) => {
    if (window.__failPath && String(url).includes(window.__failPath)) {
      reject(new TypeError("refused"));
      return;
    }
    const later = setTimeout(() => realFetch(url, init).then(resolve, reject), window.__delayMs);
    if (init && init.signal) {
      init.signal.addEventListener("abort", () => {
        clearTimeout(later);
        reject(new DOMException("aborted", "AbortError"));
      });
    }
  }).finally(() => { window.__inflight -= 1; });
};
"""


def test_the_live_page_holds_up_to_bad_keys_sign_out_and_a_slow_api(
    start_dev: Callable[..., DevServer],
) -> None:
    sync_playwright = _chromium_or_skip()
    # A key with spaces, a plus and a slash: the API takes it (the bearer is what
    # follows "Bearer "), so the page must too.
    key = "correct horse+battery/staple="
    server = start_dev("--sweep-interval", "1h", env_extra={"TETHER_OPERATOR_KEY": key})
    page_url = f"http://127.0.0.1:{server.port}/admin/dashboard"
    with _launched(sync_playwright) as browser:
        page = browser.new_page()
        page.add_init_script(SLOW_FETCH)

        def until(expression: str, seconds: float) -> None:
            # Polled from here: the page's policy forbids the eval waiting inside it takes.
            deadline = time.monotonic() + seconds
            while not page.evaluate(expression):
                assert time.monotonic() < deadline, expression
                page.wait_for_timeout(50)

        def opacity() -> float:
            style = "getComputedStyle(document.querySelector('#board')).opacity"
            return float(page.evaluate(style))

        def signed_out() -> bool:
            return bool(page.is_visible("#login") and not page.is_visible("#board"))

        # A link's key is read as written: a '+' is a plus (half of the keys
        # `openssl rand -base64 32` makes hold one), in a fragment as in a query.
        for link in (f"{page_url}#key={key.replace(' ', '%20')}", f"{page_url}?key={key}"):
            page.goto(link)
            page.wait_for_selector("#board:not([hidden])", timeout=15000)
            assert page.url == page_url
            page.click("#sign-out")

        # The link opened in the tab already on the page (signed out, or under a
        # key of an earlier run): only the fragment changes, and the browser does
        # not load the page again for it. The page signed in from nothing.
        page.goto(f"{page_url}#key={key.replace(' ', '%20')}")
        page.wait_for_selector("#board:not([hidden])", timeout=15000)
        assert page.url == page_url
        page.click("#sign-out")

        # A key that cannot be sent in a header is refused, and the tab stays usable.
        page.goto(f"{page_url}?key=abc%0Adef")
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        assert "that is not a key" in page.inner_text("#login-error")
        page.goto(page_url)
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        page.fill("#key", key)
        page.click("#login-form button")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)

        # Signed out while a refresh is under way: what it brings is not shown.
        page.evaluate("window.__delayMs = 2000")
        until("window.__inflight > 0", 15)
        page.click("#sign-out")
        page.wait_for_timeout(3000)
        assert signed_out()
        assert page.inner_text("#status") == "signed out"

        # The reason a key was refused outlives the next refresh.
        page.evaluate("window.__delayMs = 0")
        page.fill("#key", "wrong-key-0123456789")
        page.click("#login-form button")
        page.wait_for_selector("#login-error:not([hidden])", timeout=15000)
        page.wait_for_timeout(6000)
        assert "not accepted" in page.inner_text("#login-error")

        # An API that does not answer: the page says so, and sends no more while
        # it waits (4 requests a refresh).
        page.fill("#key", key)
        page.click("#login-form button")
        page.wait_for_selector("#board:not([hidden])", timeout=15000)
        page.evaluate("window.__delayMs = 60000; window.__maxInflight = window.__inflight")
        until("document.querySelector('#status').textContent.includes('did not answer')", 25)
        assert "within 10 s" in page.inner_text("#status")
        assert page.evaluate("window.__maxInflight") <= 4
        # What the board still shows is not live ("last seen 3 s ago" stops being
        # true): greyed, and said to be what was read at the last refresh.
        assert re.search(r"showing what was read at \d\d:\d\d:\d\d", page.inner_text("#status"))
        assert opacity() < 1

        # One request failing at once while the others hang: they end with their
        # refresh, so the next one does not add to them.
        page.evaluate(
            "window.__failPath = '/stats/daily'; window.__maxInflight = window.__inflight"
        )
        page.wait_for_timeout(11000)
        assert page.evaluate("window.__maxInflight") <= 4
        assert "could not refresh" in page.inner_text("#status")
        assert opacity() < 1

        # The API back: live again.
        page.evaluate("window.__failPath = null; window.__delayMs = 0")
        until("document.querySelector('#status').textContent.startsWith('updated')", 25)
        assert opacity() == 1

        # A 403 that is not the API's (a proxy's, a firewall's) says nothing of the
        # key: the page keeps it, says what came (its message: over HTTP/2, as API
        # Gateway serves a browser, there is no status text), and is live again once
        # it passes.
        page.route(
            "**/stats/live",
            lambda route: route.fulfill(
                status=403,
                content_type="application/json",
                body='{"message":"Blocked by the office proxy"}',
            ),
        )
        until(
            "document.querySelector('#status').textContent"
            ".includes('403 Blocked by the office proxy')",
            15,
        )
        assert page.is_visible("#board") and opacity() < 1
        page.unroute("**/stats/live")
        until("document.querySelector('#status').textContent.startsWith('updated')", 15)
        assert opacity() == 1

        # The API's own 403, a valid token whose holder is not an operator, signs out.
        page.click("#sign-out")
        page.fill("#key", sign(claims(sub=str(uuid.uuid4())), HS256_SECRET, "HS256"))
        page.click("#login-form button")
        page.wait_for_selector("#login-error:not([hidden])", timeout=15000)
        assert "not an operator" in page.inner_text("#login-error")


def test_signing_in_while_the_database_is_down_keeps_the_key_and_says_so(
    start_dev: Callable[..., DevServer],
) -> None:
    """Signed in while the API answered 503 (its database down), the form came back
    empty, as if the key had been refused, with the reason in the header alone: the key
    was kept, and the board came once the database was back."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    page_url = f"http://127.0.0.1:{server.port}/admin/dashboard"
    unavailable = json.dumps(
        {"status": 503, "code": "unavailable", "detail": "the database is unavailable or busy"}
    )
    with _launched(sync_playwright) as browser:
        page = browser.new_page()
        page.route(
            "**/stats/live",
            lambda route: route.fulfill(
                status=503, content_type="application/problem+json", body=unavailable
            ),
        )
        page.goto(page_url)
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        page.fill("#key", key)
        page.click("#login-form button")
        page.wait_for_selector("#login-error:not([hidden])", timeout=15000)
        said = page.inner_text("#login-error")
        assert "the database is unavailable or busy" in said
        assert "the key is kept" in said
        page.unroute("**/stats/live")
        page.wait_for_selector("#board:not([hidden])", timeout=15000)
        assert not page.is_visible("#login")


def _until(page: Any, selector: str, start: str, seconds: float) -> None:
    """Until the element's text starts so, polled from here: the page's policy forbids
    the eval that waiting inside it takes."""
    deadline = time.monotonic() + seconds
    while not page.inner_text(selector).startswith(start):
        assert time.monotonic() < deadline, page.inner_text(selector)
        page.wait_for_timeout(50)


# What a corporate sign-in proxy answers, with 200, in the API's place once its own
# session has run out.
SIGN_IN_PAGE = """<!doctype html><h1>Sign in to continue</h1>
<form action="/admin/dashboard"><input name="password" type="password"><button>go</button></form>"""


def test_a_page_answered_in_the_api_s_place_is_said_not_shown(
    start_dev: Callable[..., DevServer],
) -> None:
    """A proxy's sign-in page answered at the chart's address was drawn into the board,
    its password field among the sessions, with the page saying it was up to date; at
    another address, the page said only that '<' is not valid JSON."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)

    def sign_in_page(route: Any) -> None:
        route.fulfill(status=200, content_type="text/html", body=SIGN_IN_PAGE)

    with _launched(sync_playwright) as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard#key={key}")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        for address in ("**/dashboard/chart.svg*", "**/stats/live"):
            page.route(address, sign_in_page)
            _until(page, "#status", "could not refresh", 15)
            said = page.inner_text("#status")
            assert "text/html came instead of the API's" in said, said
            assert page.locator("#board input, #board form").count() == 0
            page.unroute(address)
            _until(page, "#status", "updated", 15)
        assert page.locator("#chart rect.bar").count() == 14


def test_a_server_that_stopped_is_said_to_be_unreachable(
    start_dev: Callable[..., DevServer],
) -> None:
    """With tether dev stopped under the open page, the page said only 'Failed to
    fetch', the browser's own words, which name nothing."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    with _launched(sync_playwright) as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard#key={key}")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        server.stop(signal.SIGINT)
        _until(page, "#status", "could not refresh", 15)
        said = page.inner_text("#status")
        assert said.startswith("could not refresh: the API could not be reached"), said
        assert "showing what was read at" in said


def test_signing_out_after_a_failed_refresh_is_not_said_as_an_error(
    start_dev: Callable[..., DevServer],
) -> None:
    """Signed out while refreshes failed, the page said "signed out" in the failure's
    red, as if signing out had failed too."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    with _launched(sync_playwright) as browser:
        page = browser.new_page()

        def color() -> str:
            return str(page.evaluate("getComputedStyle(document.querySelector('#status')).color"))

        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard")
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        signed_out = color()
        page.fill("#key", key)
        page.click("#login-form button")
        page.wait_for_selector("body[data-loaded=true]", timeout=15000)
        page.route("**/stats/live", lambda route: route.abort("connectionrefused"))
        _until(page, "#status", "could not refresh", 15)
        failed = color()
        assert failed != signed_out
        page.click("#sign-out")
        assert page.inner_text("#status") == "signed out"
        assert color() == signed_out


def test_a_key_too_long_is_said_to_be_too_long(
    start_dev: Callable[..., DevServer],
) -> None:
    """A key of printable ASCII on one line, only too long (past 8,192 characters), was
    refused as not printable ASCII on one line: untrue of it, and no help."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    page_url = f"http://127.0.0.1:{server.port}/admin/dashboard"
    too_long = "k" * 9000
    with _launched(sync_playwright) as browser:
        page = browser.new_page()
        page.goto(page_url)
        page.wait_for_selector("#login:not([hidden])", timeout=15000)
        page.fill("#key", too_long)
        page.click("#login-form button")
        page.wait_for_selector("#login-error:not([hidden])", timeout=15000)
        said = "a key or token is at most 8,192 characters, and this is 9,000"
        assert said in page.inner_text("#login-error")
        page.goto(f"{page_url}#key={too_long}")
        page.wait_for_selector("#login-error:not([hidden])", timeout=15000)
        assert said in page.inner_text("#login-error")
        # Printable ASCII on one line, at the longest a key may be: sent, and refused
        # by the API, not by the page.
        page.goto(page_url)
        page.fill("#key", too_long[:8192])
        page.click("#login-form button")
        _until(page, "#login-error", "the operator key was not accepted", 15)


def test_a_key_kept_while_the_api_fails_can_be_forgotten(
    start_dev: Callable[..., DevServer],
) -> None:
    """Opened (or reloaded) while the API answered 503, the page kept the key and tried
    it again every 5 s, with no "sign out" to forget it until the database was back."""
    sync_playwright = _chromium_or_skip()
    server = start_dev("--sweep-interval", "1h")
    key = _key(server)
    unavailable = json.dumps(
        {"status": 503, "code": "unavailable", "detail": "the database is unavailable or busy"}
    )
    with _launched(sync_playwright) as browser:
        page = browser.new_page()
        page.route(
            "**/stats/live",
            lambda route: route.fulfill(
                status=503, content_type="application/problem+json", body=unavailable
            ),
        )
        page.goto(f"http://127.0.0.1:{server.port}/admin/dashboard#key={key}")
        _until(page, "#status", "could not refresh", 15)
        page.click("#sign-out", timeout=5000)
        assert page.inner_text("#status") == "signed out"
        assert page.evaluate("sessionStorage.length") == 0
        # The database back: the key was forgotten, so the page stays signed out.
        page.unroute("**/stats/live")
        page.wait_for_timeout(6000)
        assert page.is_visible("#login") and not page.is_visible("#board")


def test_kick_embedded_beside_a_dev_of_another_database_says_so(
    start_dev: Callable[..., DevServer], tmp_path: Path
) -> None:
    """--embedded takes the endpoint of the dev serving the embedded database; a dev
    here serving another database is not it, and was said not to be running at all."""
    from tests.support import run_tether  # noqa: PLC0415
    from tether.local import embedded  # noqa: PLC0415

    data = tmp_path / ".tether" / "pgdata"
    made = embedded.start(data)  # `tether dev` made it once, and is not serving it now
    made.stop()
    start_dev()  # in tmp_path, on the test's own database
    try:
        kicked = run_tether(
            "kick", "--user", str(uuid.uuid4()), "--embedded", "--yes", cwd=tmp_path
        )
    finally:
        embedded.stop_if_running(data)
    assert kicked.returncode == 1
    assert "the tether dev running in this folder serves another database" in kicked.stderr
