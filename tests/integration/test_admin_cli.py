"""`tether sessions`, `tether stats` and `tether kick`, run as an operator runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import psycopg
import pytest

from tests import connections_standin
from tests.conftest import SessionFactory
from tests.connections_standin import ConnectionsStandIn
from tests.support import TETHER, run_tether
from tether import runtime
from tether.admin import operations
from tether.admin.schemas import (
    DailyStatsReport,
    LiveStats,
    SessionClosed,
    SessionPublic,
    SessionsPage,
    UserDisconnected,
)
from tether.cli import admin as admin_cli
from tether.cli import main

Conn = psycopg.Connection[dict[str, object]]
README = Path(__file__).resolve().parents[2] / "README.md"
# AWS takes any key from moto: one no output may show.
SECRET_KEY = "kick-test-secret-3f9a1c"


def _tether(*args: str) -> subprocess.CompletedProcess[str]:
    """With none of the test process's settings: only what the command line says."""
    return run_tether(*args, inherit_settings=False)


@pytest.fixture
def gateway() -> Iterator[ConnectionsStandIn]:
    with connections_standin.serve() as state:
        yield state


def test_sessions_as_a_table_and_as_json(database_url: str, make_session: SessionFactory) -> None:
    user = uuid.uuid4()
    live = make_session(user_id=user, started_seconds_ago=90)
    make_session(started_seconds_ago=3600, ended_seconds_ago=3000, end_reason="gone")
    table = _tether("sessions", "--database-url", database_url)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "SESSION",
        "USER",
        "STARTED",
        "(UTC)",
        "STATE",
        "DURATION",
        "LAST",
        "SEEN",
    ]
    assert str(live["session_id"]) in lines[1] and "active" in lines[1]
    assert "gone" in lines[2] and "10 minutes" in lines[2]

    only = _tether(
        "sessions", "--active", "--user", str(user), "--json", "--database-url", database_url
    )
    page = json.loads(only.stdout)
    assert [s["session_id"] for s in page["sessions"]] == [str(live["session_id"])]
    assert set(page) == set(SessionsPage.model_fields)
    assert set(page["sessions"][0]) == set(SessionPublic.model_fields)

    capped = _tether("sessions", "--limit", "1", "--database-url", database_url)
    assert "more with --limit" in capped.stdout


def test_which_sessions_are_orphans_past_the_newest_page(
    database_url: str, make_session: SessionFactory
) -> None:
    """The origin's "which are orphans" (live sessions started over 2 hours ago): newest
    first, a page of 500 never reached them once 500 newer clients were connected, and
    nothing else on the command line listed them."""
    orphans = {str(make_session(started_seconds_ago=3 * 3600 + n)["session_id"]) for n in range(3)}
    for _ in range(3):
        make_session(started_seconds_ago=60)
    make_session(started_seconds_ago=4 * 3600, ended_seconds_ago=3 * 3600, end_reason="gone")
    listed = _tether(
        "sessions", "--active", "--older-than", "2h", "--limit", "3", "--json",
        "--database-url", database_url,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert {s["session_id"] for s in page["sessions"]} == orphans
    assert page["next_cursor"] is None
    # Said with its unit, as close-orphans takes it: a bare number could be either.
    bare = _tether("sessions", "--older-than", "7200", "--database-url", database_url)
    assert bare.returncode == 2
    assert "with its unit" in bare.stderr


class _LaptopTwoHoursAhead(datetime):
    """This machine's clock, two hours ahead of the database's."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _LaptopTwoHoursAhead:
        return super().now(tz) + timedelta(hours=2)


def test_sessions_count_ages_by_the_database_s_clock(
    database_url: str,
    make_session: SessionFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A laptop whose clock is off listed sessions by their age on it: two hours ahead,
    every live session was an orphan, and those of a minute ago were shown as 2 hours old."""
    orphan = str(make_session(started_seconds_ago=3 * 3600)["session_id"])
    fresh = str(make_session(started_seconds_ago=60)["session_id"])
    monkeypatch.setattr(admin_cli, "datetime", _LaptopTwoHoursAhead)
    assert (
        main(
            ["sessions", "--active", "--older-than", "2h", "--json", "--database-url", database_url]
        )
        == 0
    )
    page = json.loads(capsys.readouterr().out)
    assert [s["session_id"] for s in page["sessions"]] == [orphan]
    assert main(["sessions", "--active", "--database-url", database_url]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if fresh in line]
    assert " 1 minute " in line and "hours" not in line


def test_orphans_past_the_limit_are_counted_and_the_oldest_said(
    database_url: str, make_session: SessionFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Newest first, a listing cut at its limit showed the youngest orphans and said
    nothing of the older ones, which are what the question is about."""
    orphans = [make_session(started_seconds_ago=3 * 3600 + 60 * n) for n in range(5)]
    make_session(started_seconds_ago=60)
    oldest = orphans[-1]["session_start"]
    assert isinstance(oldest, datetime)
    args = ["sessions", "--active", "--older-than", "2h", "--limit", "2"]
    assert main([*args, "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert sum(str(o["session_id"]) in out for o in orphans) == 2
    said = (
        "(the newest 2 of 5 active sessions started more than 2 hours ago; the oldest"
        f" started {oldest.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, 3.1 hours ago: a longer"
        " --older-than reaches the older ones)"
    )
    assert said in out
    # Ended ones too, by any age: counted by no summary, but said to be there.
    for n in range(3):
        make_session(started_seconds_ago=5 * 3600 + n, ended_seconds_ago=4 * 3600)
    assert (
        main(
            [
                "sessions",
                "--ended",
                "--older-than",
                "4h",
                "--limit",
                "2",
                "--database-url",
                database_url,
            ]
        )
        == 0
    )
    assert "older ones are not shown: a longer --older-than reaches them" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sessions", "--limit", "501"], "between 1 and 500"),
        (["sessions", "--user", "bob"], "not a UUID"),
        (["sessions", "--active", "--ended"], "not allowed with"),
        (["stats", "--days", "0"], "between 1 and 366"),
        (["kick"], "one of the arguments --user --session is required"),
        (
            ["kick", "--user", str(uuid.UUID(int=1)), "--session", str(uuid.UUID(int=2))],
            "not allowed",
        ),
        # With the command's own usage, not only tether's.
        (["sessions", "--bogus"], "tether sessions: error: unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    database_url: str, args: list[str], says: str
) -> None:
    result = _tether(*args, "--database-url", database_url)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_flag_given_twice_is_refused_and_nothing_is_closed(
    database_url: str, make_session: SessionFactory, db: psycopg.Connection[dict[str, object]]
) -> None:
    """argparse keeps the last of several: `kick --session A --session B --yes` closed B
    alone and said nothing of A."""
    first, second = make_session(), make_session()
    result = _tether(
        "kick",
        "--session",
        str(first["session_id"]),
        "--session",
        str(second["session_id"]),
        "--yes",
        "--database-url",
        database_url,
    )
    assert result.returncode == 2, result.stderr
    assert "argument --session: given more than once: give it once" in result.stderr
    assert result.stdout == ""
    live = db.execute(
        "select count(*) as n from public.conversation_sessions where is_active"
    ).fetchone()
    assert live == {"n": 2}


def test_stats_show_now_the_last_hour_and_the_days(
    database_url: str, make_session: SessionFactory
) -> None:
    make_session(started_seconds_ago=60)
    make_session(started_seconds_ago=600, ended_seconds_ago=120, end_reason="client_disconnect")
    text = _tether("stats", "--days", "3", "--database-url", database_url)
    assert text.returncode == 0, text.stderr
    assert "active now 1" in text.stdout
    assert "ended in the last hour 1 (client_disconnect 1)" in text.stdout
    assert "sweep last finished never" in text.stdout
    days = [line for line in text.stdout.splitlines() if line[:4].isdigit()]
    assert len(days) == 3
    # Summed over the days: shortly after midnight UTC the two starts fall on two days.
    totals = [sum(int(line.split()[column]) for line in days) for column in (1, 2, 3)]
    assert totals == [2, 1, 1]

    numbers = json.loads(_tether("stats", "--json", "--database-url", database_url).stdout)
    # The keys the README names, each the API's answer whole.
    readme = " ".join(README.read_text().split())
    named = readme[readme.index("`tether stats --json`, the two answers it shows") :]
    named = named[: named.index(")")]
    assert set(numbers) == set(re.findall(r"under `([a-z]+)`", named))
    assert set(numbers["live"]) == set(LiveStats.model_fields)
    assert set(numbers["daily"]) == set(DailyStatsReport.model_fields)
    assert numbers["live"]["active_sessions"] == 1
    assert len(numbers["daily"]["stats"]) == 7


def test_kick_asks_first_and_a_script_must_say_yes(
    database_url: str, db: Conn, make_session: SessionFactory, gateway: ConnectionsStandIn
) -> None:
    row = make_session(started_seconds_ago=60)
    result = _tether(
        "kick", "--session", str(row["session_id"]), "--endpoint-url", gateway.url,
        "--announce-to", "log", "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 1
    assert "pass --yes to confirm" in result.stderr
    assert "nothing was changed" in result.stderr
    assert gateway.calls == []
    state = db.execute(
        "select is_active from public.conversation_sessions where session_id = %s",
        (row["session_id"],),
    ).fetchone()
    assert state == {"is_active": True}


def test_kick_says_when_the_announcement_is_left_to_the_sweep(
    database_url: str,
    db: Conn,
    make_session: SessionFactory,
    gateway: ConnectionsStandIn,
    aws: str,
) -> None:
    row = make_session(started_seconds_ago=60)
    gateway.set_alive(str(row["connection_id"]))
    # A bus that does not exist: EventBridge refuses the PutEvents.
    kicked = run_tether(
        "kick", "--session", str(row["session_id"]), "--endpoint-url", gateway.url,
        "--announce-to", "eventbridge", "--yes", "--database-url", database_url,
        env={
            "TETHER_AWS_ENDPOINT_URL": aws,
            "TETHER_EVENT_BUS_NAME": "no-such-bus",
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        },
    )  # fmt: skip
    # Done, but not all of it: a script must see that, as it does a sweep's.
    assert kicked.returncode == 1, kicked.stderr
    assert "closed: ended it; the gateway closed the connection" in kicked.stdout
    assert "its SessionEnded is queued: the sweep announces it" in kicked.stdout
    # Why, in EventBridge's words, and what comes next, as the sweep says it.
    assert (
        "tether kick: 1 end(s) could not be announced and stay queued"
        " (ResourceNotFoundException); their sessions are ended, and the next sweep"
        " announces them"
    ) in kicked.stderr, kicked.stderr
    assert "could not be told to close" not in kicked.stderr
    assert SECRET_KEY not in kicked.stdout + kicked.stderr
    queued = db.execute(
        "select count(*) as n from public.conversation_session_announcements where session_id = %s",
        (row["session_id"],),
    ).fetchone()
    assert queued == {"n": 1}


def test_kick_of_a_user_says_why_its_ends_were_not_announced(
    database_url: str, make_session: SessionFactory, gateway: ConnectionsStandIn, aws: str
) -> None:
    """EventBridge refused (no such bus), or could not be reached: the ends stay
    queued, and kick said so without saying why, where the sweep and close-orphans
    name the reason. Each session of the answer carries it too (--json)."""
    user = uuid.uuid4()
    for started in (60, 30):
        gateway.set_alive(
            str(make_session(user_id=user, started_seconds_ago=started)["connection_id"])
        )
    common = ["--endpoint-url", gateway.url, "--announce-to", "eventbridge", "--yes", "--json"]
    refused = run_tether(
        "kick", "--user", str(user), *common, "--database-url", database_url,
        env={
            "TETHER_AWS_ENDPOINT_URL": aws,
            "TETHER_EVENT_BUS_NAME": "no-such-bus",
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        },
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    answer = json.loads(refused.stdout)
    assert [(s["announced"], s["announce_error"]) for s in answer["sessions"]] == [
        (False, "ResourceNotFoundException")
    ] * 2
    assert (
        "tether kick: 2 end(s) could not be announced and stay queued"
        " (ResourceNotFoundException); their sessions are ended, and the next sweep"
        " announces them"
    ) in refused.stderr, refused.stderr
    assert SECRET_KEY not in refused.stdout + refused.stderr

    # Nothing listens where EventBridge should be.
    again = make_session(user_id=user, started_seconds_ago=10)
    gateway.set_alive(str(again["connection_id"]))
    unreachable = run_tether(
        "kick", "--user", str(user), *common, "--database-url", database_url,
        env={"TETHER_AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert unreachable.returncode == 1, unreachable.stderr
    (session,) = json.loads(unreachable.stdout)["sessions"]
    assert (session["announced"], session["announce_error"]) == (False, "EndpointConnectionError")
    assert (
        "tether kick: 1 end(s) could not be announced and stay queued (EndpointConnectionError)"
    ) in unreachable.stderr, unreachable.stderr


def test_kick_a_session_then_a_user(
    database_url: str, db: Conn, make_session: SessionFactory, gateway: ConnectionsStandIn
) -> None:
    user = uuid.uuid4()
    one = make_session(user_id=user, started_seconds_ago=60)
    two = make_session(user_id=user, started_seconds_ago=30)
    for row in (one, two):
        gateway.set_alive(str(row["connection_id"]))
    common = ["--endpoint-url", gateway.url, "--announce-to", "log", "--yes"]
    common += ["--database-url", database_url]

    kicked = _tether("kick", "--session", str(one["session_id"]), *common)
    assert kicked.returncode == 0, kicked.stderr
    assert "closed: ended it; the gateway closed the connection" in kicked.stdout
    again = _tether("kick", "--session", str(one["session_id"]), *common, "--json")
    assert json.loads(again.stdout)["outcome"] == "already_closed"
    # What the API answers, as the README says --json prints.
    assert set(json.loads(again.stdout)) == set(SessionClosed.model_fields)
    # Asked again without --yes, it says what is left to do: the row stays as it ended.
    without_yes = [arg for arg in common if arg != "--yes"]
    unsure = _tether("kick", "--session", str(one["session_id"]), *without_yes)
    assert "already ended (forced_close)" in unsure.stdout
    assert f"ask the gateway to close session {one['session_id']}'s connection" in unsure.stderr

    user_kick = _tether("kick", "--user", str(user), *common)
    assert user_kick.returncode == 0, user_kick.stderr
    assert "user" in user_kick.stdout and "1 live session(s)" in user_kick.stdout
    assert f"closed 1 session(s) of user {user}" in user_kick.stdout
    reasons = db.execute(
        "select end_reason from public.conversation_sessions where user_id = %s", (user,)
    ).fetchall()
    assert [r["end_reason"] for r in reasons] == ["forced_close", "forced_close"]
    assert (
        _tether("kick", "--user", str(user), *common).stdout.strip().endswith("has no live session")
    )
    nobody = json.loads(_tether("kick", "--user", str(user), *common, "--json").stdout)
    assert set(nobody) == set(UserDisconnected.model_fields)


def test_kick_is_not_held_to_the_api_s_answer_time(
    database_url: str,
    db: Conn,
    make_session: SessionFactory,
    gateway: ConnectionsStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The API's closes answer within 24 s (API Gateway's 29 s), so a step whose worst
    case no longer fits is left undone: a chunk of announcements needs 22 s, and kicking
    a user's 500 sessions from a busy laptop left most ends to the sweep, and exited 1.
    A terminal waits, up to the ends' announce lease (past it the sweep may announce
    them too): with the API's budgets gone to nothing, kick still takes every step."""
    monkeypatch.setattr(operations, "USER_DISCONNECT_BUDGET_SECONDS", 0.0)
    monkeypatch.setattr(operations, "SESSION_CLOSE_BUDGET_SECONDS", 0.0)
    user = uuid.uuid4()
    rows = [make_session(user_id=user, started_seconds_ago=60 + n) for n in range(3)]
    for row in rows:
        gateway.set_alive(str(row["connection_id"]))
    common = ["--endpoint-url", gateway.url, "--announce-to", "log", "--yes", "--json"]
    common += ["--database-url", database_url]
    try:
        capsys.readouterr()
        assert main(["kick", "--session", str(rows[0]["session_id"]), *common]) == 0
        one = json.loads(capsys.readouterr().out)
        assert main(["kick", "--user", str(user), *common]) == 0
        answer = json.loads(capsys.readouterr().out)
    finally:
        runtime.reset()
    assert (one["announced"], one["session"]["end_reason"]) == (True, "forced_close")
    assert answer["complete"] is True, answer["detail"]
    assert [(s["announced"], s["session"] is not None) for s in answer["sessions"]] == [
        (True, True)
    ] * 2
    queued = db.execute(
        "select count(*) as n from public.conversation_session_announcements"
    ).fetchone()
    assert queued == {"n": 0}

    # Not past the ends' lease, though: then the sweep may announce them too.
    monkeypatch.setenv("TETHER_ANNOUNCE_LEASE_SECONDS", "0")
    gateway.set_alive(str(make_session(user_id=user, started_seconds_ago=5)["connection_id"]))
    try:
        assert main(["kick", "--user", str(user), *common]) == 1
        (late,) = json.loads(capsys.readouterr().out)["sessions"]
    finally:
        runtime.reset()
    assert (late["announced"], late["announce_error"]) == (
        False,
        operations.NOT_ANNOUNCED_IN_TIME,
    )


def test_kick_needs_the_gateway_and_an_existing_session(database_url: str) -> None:
    without = _tether("kick", "--user", str(uuid.uuid4()), "--yes", "--database-url", database_url)
    # A setting it needs, not set: refused with 1, as the README's exit codes say.
    assert without.returncode == 1
    assert "--endpoint-url" in without.stderr
    assert without.stdout == ""
    unknown = _tether(
        "kick", "--session", str(uuid.uuid4()), "--yes", "--endpoint-url", "http://127.0.0.1:9/x",
        "--database-url", database_url,
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "no session" in unknown.stderr
    assert unknown.stdout == ""
    # As the README's exit statuses say: an id that names nothing is refused for what
    # was found (1), where a user with no live session has nothing to close (0).
    said = " ".join(README.read_text().split())
    statuses = said[said.index("Every command exits 0 when") :]
    statuses = statuses[: statuses.index("ends quietly with 141")]
    assert "an id that names nothing (`kick --session` of a session that does not exist" in (
        statuses
    )
    assert "a `kick --user` with no live session has nothing to close, and exits 0" in statuses


def test_kick_refuses_an_endpoint_that_is_not_one_before_anything(
    database_url: str, make_session: SessionFactory
) -> None:
    row = make_session(started_seconds_ago=60)
    refused = _tether(
        "kick", "--session", str(row["session_id"]), "--yes", "--endpoint-url", "foo",
        "--database-url", database_url,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "--endpoint-url" in refused.stderr and "http(s) URL" in refused.stderr
    assert "Traceback" not in refused.stderr
    with psycopg.connect(database_url) as conn:
        active = conn.execute(
            "select is_active from public.conversation_sessions where session_id = %s",
            (row["session_id"],),
        ).fetchone()
    assert active == (True,)


@pytest.mark.parametrize(
    "url", ["", "http://", "ftp://gw.example/prod", "https//ops:s3cretpass@gw.example/p"]
)
@pytest.mark.parametrize("command", [["kick", "--session", str(uuid.uuid4()), "--yes"], ["sweep"]])
def test_every_endpoint_that_is_not_one_is_a_usage_error(
    command: list[str], url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--endpoint-url", url, "--database-url", "postgresql://x@/y"])
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert "--endpoint-url" in said and "http(s) URL" in said
    assert "s3cretpass" not in said


def test_credentials_in_the_endpoint_are_never_shown(
    database_url: str, make_session: SessionFactory
) -> None:
    row = make_session(started_seconds_ago=60)
    failed = _tether(
        "kick", "--session", str(row["session_id"]), "--yes", "--announce-to", "log",
        "--endpoint-url", "http://admin:hunter2secret@127.0.0.1:9/local?token=tok123secret",
        "--database-url", database_url,
    )  # fmt: skip
    assert failed.returncode == 1
    said = failed.stdout + failed.stderr
    assert "could not be told to close" in said
    assert "hunter2secret" not in said and "tok123secret" not in said


def test_kick_takes_the_endpoint_as_shown_and_says_when_the_gateway_was_not_told(
    database_url: str, make_session: SessionFactory, gateway: ConnectionsStandIn
) -> None:
    common = ["--announce-to", "log", "--yes", "--database-url", database_url]
    shown = make_session(started_seconds_ago=60)
    gateway.set_alive(str(shown["connection_id"]))
    # The .../@connections/{id} form, as `tether dev`'s banner and the console show it.
    kicked = _tether(
        "kick", "--session", str(shown["session_id"]),
        "--endpoint-url", f"{gateway.url}/@connections/{{id}}", *common,
    )  # fmt: skip
    assert kicked.returncode == 0, kicked.stderr
    assert "the gateway closed the connection" in kicked.stdout
    assert ("DELETE", str(shown["connection_id"])) in gateway.calls

    # Nothing answers there: the row is ended (the first end wins), but the client may
    # still be connected, and a script must see it.
    unreachable = make_session(started_seconds_ago=60)
    failed = _tether(
        "kick", "--session", str(unreachable["session_id"]),
        "--endpoint-url", "http://127.0.0.1:9/prod", *common,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "the gateway could not be told to close the connection" in failed.stdout
    # With the gateway's reason, to mend the endpoint by.
    assert "(DeleteConnection failed: " in failed.stdout
    assert "could not be told to close 1 connection(s)" in failed.stderr
    assert "run the same kick again" in failed.stderr

    # A user's: once ended, its sessions are no longer live to --user, so the way to ask
    # again is by session.
    user = uuid.uuid4()
    live = make_session(user_id=user, started_seconds_ago=60)
    by_user = _tether(
        "kick", "--user", str(user), "--endpoint-url", "http://127.0.0.1:9/prod", *common
    )
    assert by_user.returncode == 1
    assert f"{live['session_id']}: failed: ended it; the gateway could not be told" in (
        by_user.stdout
    )
    assert "(DeleteConnection failed: " in by_user.stdout
    assert f"`tether kick --session {live['session_id']}`" in by_user.stderr


@pytest.mark.parametrize("rows", [500, 1])
def test_output_piped_into_head_ends_quietly(
    database_url: str, make_session: SessionFactory, rows: int
) -> None:
    """`tether sessions --json | head -c 0`: the reader stops, and the command printed
    a BrokenPipeError traceback and exited 1. It ends quietly, as the shell's own
    tools do (128 + SIGPIPE)."""
    for index in range(rows):
        make_session(started_seconds_ago=1000 + index)
    # Buffered as a pipe is: a short output is written only as the command ends.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONUNBUFFERED", "DATABASE_URL"}}
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [TETHER, "sessions", "--database-url", database_url, "--limit", "500", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as head does once it has its lines: here, before the first
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 128 + signal.SIGPIPE, stderr
    assert stderr == ""
