"""`tether sweep` and `tether close-orphans`, run as the operator runs them."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from tests import connections_standin
from tests.conftest import AWS_REGION, EventBus, SessionFactory, allow_connections
from tests.support import TETHER, json_lines, run_tether

Conn = psycopg.Connection[dict[str, object]]


def _state(db: Conn) -> list[dict[str, object]]:
    return db.execute(
        "select connection_id, is_active, end_reason, session_end, announced_at"
        " from public.conversation_sessions order by connection_id"
    ).fetchall()


@pytest.fixture
def orphans(make_session: SessionFactory) -> None:
    """The original report's table: 18 sessions 'active' for 9 to 444 hours."""
    for index, hours in enumerate(
        [9, 12, 20, 26, 33, 40, 51, 70, 90, 120, 150, 200, 250, 300, 350, 400, 430, 444]
    ):
        make_session(connection_id=f"orphan{index:02d}=", started_seconds_ago=hours * 3600)
    make_session(connection_id="live=", started_seconds_ago=5)


@pytest.mark.usefixtures("orphans")
def test_close_orphans_dry_run_changes_nothing(database_url: str, db: Conn) -> None:
    before = _state(db)
    result = run_tether("close-orphans", "--older-than", "2h", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert "18 active session(s) started more than 2 hours ago" in result.stdout
    assert "oldest 18.5 days" in result.stdout
    assert "dry run: nothing was changed" in result.stdout
    assert _state(db) == before


@pytest.mark.usefixtures("orphans")
def test_close_orphans_apply_ends_and_announces(
    database_url: str, db: Conn, event_bus: EventBus, aws: str
) -> None:
    env = {"TETHER_AWS_ENDPOINT_URL": aws, "TETHER_EVENT_BUS_NAME": event_bus.name}
    result = run_tether(
        "close-orphans",
        "--older-than",
        "2h",
        "--apply",
        "--yes",
        "--database-url",
        database_url,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "ended 18 session(s) with reason orphan_cleanup; announced 18" in result.stdout
    rows = {str(r["connection_id"]): r for r in _state(db)}
    assert rows["live="]["is_active"] is True
    ended = [r for c, r in rows.items() if c != "live="]
    assert {r["end_reason"] for r in ended} == {"orphan_cleanup"}
    assert all(r["announced_at"] is not None for r in ended)
    assert len(event_bus.received()) == 18
    again = run_tether(
        "close-orphans",
        "--older-than",
        "2h",
        "--apply",
        "--yes",
        "--database-url",
        database_url,
        env=env,
    )
    assert "no active session started more than 2 hours ago" in again.stdout


@pytest.mark.usefixtures("orphans")
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_close_orphans_tells_its_ends_from_others_it_announced(
    database_url: str, db: Conn, make_session: SessionFactory, as_json: bool
) -> None:
    """Two ends made elsewhere wait in the outbox (their announcement failed): the run
    announces them with its own, and said "ended 18 ...; announced 20" as if all were
    its own."""
    for name in ("left-a=", "left-b="):
        make_session(connection_id=name, started_seconds_ago=600, ended_seconds_ago=300)
    # The dry run says so first: --apply drains the outbox whole.
    dry = run_tether(
        "close-orphans", "--older-than", "2h", *(["--json"] if as_json else []),
        "--announce-to", "log", "--database-url", database_url,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    if as_json:
        assert (json.loads(dry.stdout)["found"], json.loads(dry.stdout)["queued"]) == (18, 2)
    else:
        assert "--apply also announces the 2 other end(s) waiting in the outbox" in dry.stdout
    result = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes",
        *(["--json"] if as_json else []),
        "--announce-to", "log", "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if as_json:
        outcome = json.loads(result.stdout)
        assert (outcome["ended"], outcome["announced"], outcome["announced_others"]) == (18, 20, 2)
    else:
        assert (
            "ended 18 session(s) with reason orphan_cleanup; announced 20 (2 of them other ends"
            " that were waiting in the outbox)"
        ) in result.stdout
    waiting = db.execute("select count(*) as n from public.conversation_session_announcements")
    assert waiting.fetchone() == {"n": 0}


@pytest.mark.usefixtures("orphans")
def test_close_orphans_dry_run_counts_only_the_ends_apply_would_announce(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Two ends wait in the outbox, one of them held by whoever is announcing it (its
    lease): the dry run said --apply would also announce both, and --apply then
    announced one of them."""
    for name in ("left-a=", "left-b="):
        make_session(connection_id=name, started_seconds_ago=600, ended_seconds_ago=300)
    db.execute("select * from public.tether_claim_unannounced_v2(1, 600)")
    dry = run_tether(
        "close-orphans", "--older-than", "2h", "--announce-to", "log",
        "--database-url", database_url,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "--apply also announces the 1 other end(s) waiting in the outbox" in dry.stdout
    assert "1 more end(s) held for whoever is announcing them" in dry.stdout
    dry_json = run_tether(
        "close-orphans", "--older-than", "2h", "--json", "--announce-to", "log",
        "--database-url", database_url,
    )  # fmt: skip
    dry_report = json.loads(dry_json.stdout)
    # --json says the held one too, as the dry run's text does.
    assert (dry_report["queued"], dry_report["held"]) == (1, 1), dry_json.stdout
    applied = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes", "--json",
        "--announce-to", "log", "--database-url", database_url,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert report["announced_others"] == 1, applied.stdout
    # Once applied, the held end is still held, as the dry run said: a number, not null.
    assert (report["queued"], report["held"]) == (0, 1), applied.stdout
    said = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes", "--announce-to", "log",
        "--database-url", database_url,
    )  # fmt: skip
    assert (
        "1 announcement(s) held by a lease for whoever is announcing them: the sweep delivers"
        " them once it ends"
    ) in said.stdout, said.stdout


def test_close_orphans_at_the_oldest_age_it_takes_ends_what_it_found(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """--older-than 366d, the most it takes: each batch's reach (the age plus the time
    since the count) was past what the functions take from the first batch on, so the
    run refused, and told to run it again with --older-than 366d."""
    make_session(connection_id="ancient=", started_seconds_ago=400 * 86400)
    make_session(connection_id="recent=", started_seconds_ago=300 * 86400)
    result = run_tether(
        "close-orphans", "--older-than", "366d", "--apply", "--yes", "--database-url", database_url,
        "--announce-to", "log",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ended 1 session(s) with reason orphan_cleanup" in result.stdout
    rows = {str(r["connection_id"]): r for r in _state(db)}
    assert (rows["ancient="]["is_active"], rows["ancient="]["end_reason"]) == (
        False,
        "orphan_cleanup",
    )
    assert rows["recent="]["is_active"] is True


def test_close_orphans_keeps_an_end_intent_in_force(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """A sweep closed a silent connection, recorded its end intent, and was stopped
    before ending it: --apply ended it as orphan_cleanup, where every other end keeps
    the intent's reason and time. A void intent (a sign of life after it) is not kept."""
    for name in ("closed=", "void=", "orphan="):
        make_session(connection_id=name, started_seconds_ago=3 * 3600, seen_seconds_ago=3600)
    # The intent's time is its last sign of life as the sweep saw it; here two minutes
    # on (a heartbeat the sweep had not seen), so that the end's time tells which it is.
    db.execute(
        "update public.conversation_sessions set end_intent_reason = 'heartbeat_timeout',"
        " end_intent_at = last_seen_at + case connection_id when 'closed=' then interval"
        " '2 minutes' else interval '-5 minutes' end"
        " where connection_id in ('closed=', 'void=')"
    )
    env = {"TETHER_ANNOUNCE_TO": "log"}
    command = ("close-orphans", "--older-than", "2h", "--database-url", database_url)
    dry = run_tether(*command, env=env)
    assert dry.returncode == 0, dry.stderr
    assert (
        "add --apply to end them (2 with reason orphan_cleanup, 1 with the reason of their end"
        " intent: a sweep closed their connections)"
    ) in dry.stdout
    dry_json = json.loads(run_tether(*command, "--json", env=env).stdout)
    assert (dry_json["found"], dry_json["intended"]) == (3, 1)

    result = run_tether(*command, "--apply", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert "ended 3 session(s): 1 heartbeat_timeout, 2 orphan_cleanup; announced 3" in (
        result.stdout
    )
    ends = db.execute(
        "select connection_id, end_reason,"
        " extract(epoch from session_end - last_seen_at)::int as after_last_seen"
        " from public.conversation_sessions order by connection_id"
    ).fetchall()
    assert ends == [
        {"connection_id": "closed=", "end_reason": "heartbeat_timeout", "after_last_seen": 120},
        {"connection_id": "orphan=", "end_reason": "orphan_cleanup", "after_last_seen": 0},
        {"connection_id": "void=", "end_reason": "orphan_cleanup", "after_last_seen": 0},
    ]


def test_close_orphans_ends_only_the_sessions_it_asked_about(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """The question counts the orphans; the sessions that crossed the age limit while
    the operator read it were ended too ("end 1 session(s)?" y: "ended 3")."""
    make_session(connection_id="old=", started_seconds_ago=3 * 3600)
    for name in ("almost-a=", "almost-b="):
        make_session(connection_id=name, started_seconds_ago=2 * 3600 - 8)
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    terminal, operator = os.openpty()  # the question is asked only on a terminal
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [
            *(TETHER, "close-orphans", "--older-than", "2h", "--apply"),
            *("--announce-to", "log", "--database-url", database_url),
        ],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
    )
    try:
        assert process.stderr is not None
        asked = process.stderr.read(len("end 1 session(s) as orphan_cleanup?"))
        assert asked == "end 1 session(s) as orphan_cleanup?", asked
        time.sleep(10)  # the two others are past 2 hours now
        os.write(operator, b"y\n")
        out, err = process.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(operator)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "ended 1 session(s)" in out, out
    active = {str(r["connection_id"]): r["is_active"] for r in _state(db)}
    assert active == {"old=": False, "almost-a=": True, "almost-b=": True}


def test_ctrl_c_at_the_question_says_nothing_was_changed(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Ctrl-C at "end 1 session(s)?" said "interrupted; what it had done is kept", on the
    prompt's own line, as if some sessions had been ended."""
    make_session(connection_id="old=", started_seconds_ago=3 * 3600)
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    terminal, operator = os.openpty()  # the question is asked only on a terminal
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [
            *(TETHER, "close-orphans", "--older-than", "2h", "--apply"),
            *("--announce-to", "log", "--database-url", database_url),
        ],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
        # As at a terminal: a job started in the background (CI's, often) inherits
        # SIGINT ignored, and Python then installs no Ctrl-C handler at all.
        preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
    )
    try:
        assert process.stderr is not None
        asked = process.stderr.read(len("end 1 session(s) as orphan_cleanup? [y/N] "))
        assert asked == "end 1 session(s) as orphan_cleanup? [y/N] ", asked
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(operator)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert err == (
        "\ntether close-orphans: interrupted at the question, taken as no: nothing was changed\n"
    )
    assert [r["is_active"] for r in _state(db)] == [True]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("soon", "not a duration"),
        ("-2h", "not a duration"),
        ("0s", "'0s': a duration must be more than 0"),
        ("2x", "'2x': not a duration"),
        ("367d", "'367d': must be at most 366 days"),
        ("", "a duration is required"),
        ("2", "with its unit"),
        ("7200", "with its unit"),
    ],
)
def test_close_orphans_refuses_a_bad_duration(database_url: str, bad: str, says: str) -> None:
    result = run_tether("close-orphans", f"--older-than={bad}", "--database-url", database_url)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("limit", ["0", "0s", "soon"])
def test_sweep_refuses_a_time_limit_that_is_no_time(database_url: str, limit: str) -> None:
    result = run_tether("sweep", "--time-limit", limit, "--database-url", database_url)
    assert result.returncode == 2
    assert "argument --time-limit" in result.stderr
    assert "stopped for time" not in result.stdout


@pytest.mark.usefixtures("orphans")
@pytest.mark.parametrize("age", ["1s", "90m", "1h59m"])
def test_close_orphans_refuses_ages_at_which_a_session_can_still_be_live(
    database_url: str, db: Conn, age: str
) -> None:
    before = _state(db)
    result = run_tether(
        "close-orphans", "--older-than", age, "--apply", "--yes", "--database-url", database_url
    )
    assert result.returncode == 2  # the command line asked for it: a usage error
    assert "could end sessions that are still connected" in result.stderr
    assert "--force" in result.stderr
    assert _state(db) == before


@pytest.mark.usefixtures("orphans")
def test_close_orphans_asks_before_applying_and_a_script_must_say_yes(
    database_url: str, db: Conn
) -> None:
    before = _state(db)
    result = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--database-url", database_url
    )
    assert result.returncode == 1
    # The prompt and the refusal are on stderr: stdout stays the report alone.
    assert "pass --yes to confirm" in result.stderr
    assert "nothing was changed" in result.stderr
    assert _state(db) == before


@pytest.mark.usefixtures("orphans")
def test_close_orphans_forced_under_two_hours_ends_only_what_is_older(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    # Between the age asked for and API Gateway's 2 hours: only --force reaches them.
    make_session(connection_id="older=", started_seconds_ago=45 * 60)
    make_session(connection_id="younger=", started_seconds_ago=20 * 60)
    result = run_tether(
        "close-orphans",
        "--older-than",
        "30m",
        "--force",
        "--apply",
        "--yes",
        "--json",
        "--announce-to",
        "log",
        "--database-url",
        database_url,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ended"] == 19
    assert outcome["announced"] == 19
    assert outcome["queued"] == 0
    active = {r["connection_id"]: r["is_active"] for r in _state(db)}
    assert (active["older="], active["younger="], active["live="]) == (False, True, True)


@pytest.mark.usefixtures("orphans")
def test_sweep_dry_run_then_run(database_url: str, db: Conn, make_session: SessionFactory) -> None:
    make_session(connection_id="gone=", started_seconds_ago=900, seen_seconds_ago=300)
    before = _state(db)
    dry = run_tether("sweep", "--dry-run", "--json", "--database-url", database_url)
    assert dry.returncode == 0, dry.stderr
    # The report's orphans were never heard from after their start: past both limits,
    # they reached the idle limit first.
    assert json.loads(dry.stdout) == {
        "past_max_age": 0,
        "past_idle": 18,
        "intended": 0,
        "suspects": 1,
        "unannounced": 0,
        "unannounced_held": 0,
    }
    assert _state(db) == before
    # A dry run checks once and runs nothing: flags for a real run contradict it.
    for flags, named in (
        (("--keep-checking",), "--keep-checking"),
        (("--metrics", "--keep-checking"), "--keep-checking and --metrics"),
    ):
        refused = run_tether("sweep", "--dry-run", *flags, "--database-url", database_url)
        assert refused.returncode == 2
        assert f"--dry-run counts once and runs nothing: it takes no {named}" in refused.stderr
        assert refused.stdout == ""

    with connections_standin.serve() as gateway:
        env = {"TETHER_ANNOUNCE_TO": "log", "TETHER_GONE_SETTLE_SECONDS": "0"}
        result = run_tether(
            "sweep",
            "--json",
            "--metrics",
            "--database-url",
            database_url,
            "--endpoint-url",
            gateway.url,
            env=env,
        )
    assert result.returncode == 0, result.stderr
    assert "no @connections endpoint" not in result.stderr
    # Logs and metric lines go to stderr with --json: stdout is the report alone.
    report = json.loads(result.stdout)
    ended_metrics = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"SessionsEnded"' in line
    ]
    assert sorted((m["Reason"], m["SessionsEnded"]) for m in ended_metrics) == [
        ("gone", [1.0]),
        ("idle_timeout", [18.0]),
    ]
    assert result.stderr.count('"message":"SessionEnded"') == 19
    assert report["ended_by_reason"] == {"idle_timeout": 18, "gone": 1}
    assert report["announced"] == 19
    assert report["active_sessions"] == 1
    assert report["orphaned_sessions"] == 0


def test_a_short_time_limit_still_takes_batches_until_it_is_up(
    database_url: str, make_session: SessionFactory
) -> None:
    """The limit is when batches stop being taken; under the run's 10 s margin (kept on
    Lambda for the invocation's end) it used to take none, and say to run again."""
    make_session(started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    result = run_tether(
        "sweep", "--time-limit", "5s", "--json", "--database-url", database_url,
        env={"TETHER_ANNOUNCE_TO": "log"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ended_by_reason"] == {"max_duration": 1}
    assert report["orphaned_sessions"] == 0
    # No endpoint: the run still did its part, and says what it could not do.
    assert "no @connections endpoint" in result.stderr
    assert "silent sessions are not asked about" in result.stderr


@pytest.mark.parametrize("as_json", [False, True], ids=["words", "json"])
def test_a_sweep_whose_gateway_could_not_be_asked_says_so_and_fails(
    database_url: str, make_session: SessionFactory, as_json: bool
) -> None:
    """A suspect left unchecked stays active: a script running one sweep must see that
    (exit 1), not a success promising a next run nobody scheduled; the report of what
    was done is still printed, as a kick's is."""
    make_session(connection_id="silent=", started_seconds_ago=900, seen_seconds_ago=300)
    make_session(connection_id="old=", started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    result = run_tether(
        "sweep", "--database-url", database_url, "--endpoint-url", "http://127.0.0.1:9/prod",
        *(["--json"] if as_json else []), env={"TETHER_ANNOUNCE_TO": "log"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "1 call(s) to the gateway failed" in result.stderr
    assert "run the sweep again" in result.stderr
    assert "next run" not in result.stdout + result.stderr
    if as_json:
        report = json.loads(result.stdout)
        assert report["gateway_errors"] == 1
        assert report["ended_by_reason"] == {"max_duration": 1}
    else:
        assert "1 call(s) to the gateway failed: those suspects were not checked" in result.stdout
        assert "ended 1 session(s): 1 max_duration" in result.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["words", "json"])
def test_a_sweep_tells_calls_that_failed_from_suspects_left_for_want_of_time(
    database_url: str, make_session: SessionFactory, as_json: bool
) -> None:
    """Under a slow gateway a check's questions stop once they have had their share of
    its wait and found a silent connection: the suspects never asked were counted, and
    said to be, calls to the gateway that failed ("4 call(s) ... failed" for 1). The
    exit status is as it was: they stay active, unchecked."""
    make_session(connection_id="silent=", started_seconds_ago=3600, seen_seconds_ago=500)
    make_session(connection_id="slow=", started_seconds_ago=3600, seen_seconds_ago=400)
    later = [f"later{index}=" for index in range(3)]
    for connection_id in later:
        make_session(connection_id=connection_id, started_seconds_ago=3600, seen_seconds_ago=300)
    env = {
        "TETHER_ANNOUNCE_TO": "log",
        "TETHER_HEARTBEAT_GRACE_SECONDS": "200",
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": "4",
        "TETHER_SWEEP_CONCURRENCY": "1",
    }
    with connections_standin.serve() as gateway:
        gateway.set_alive("silent=", idle_seconds=400)
        for connection_id in later:
            gateway.set_alive(connection_id)
        gateway.silent.add("slow=")
        result = run_tether(
            "sweep", "--database-url", database_url, "--endpoint-url", gateway.url,
            *(["--json"] if as_json else []), env=env,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "ran out" not in result.stdout + result.stderr
    assert (
        "tether sweep: 1 call(s) to the gateway failed and 3 suspect(s) were left unasked or"
        " unclosed for want of the check's time (their calls never started)"
    ) in result.stderr
    if as_json:
        report = json.loads(result.stdout)
        assert report["gateway_errors"] == 1
        assert (report["left_unasked"], report["left_unclosed"]) == (3, 0)
        assert (report["unchecked"], report["unchecked_for_time"]) == (4, 3)
    else:
        assert "1 call(s) to the gateway failed: those suspects were not checked" in result.stdout
        assert (
            "3 suspect(s) left unasked for want of the check's time (their calls never"
            " started; none failed): those suspects were not checked"
        ) in result.stdout
        assert "closed 1 silent connection(s) at the gateway" in result.stdout


def test_a_run_whose_later_check_asked_again_what_failed_succeeds(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """--keep-checking: a suspect's question failed in the first check and was answered
    in the next. The run exited 1, saying the suspect was not checked and stayed active,
    though its own next check had asked about it."""
    make_session(connection_id="busy=", started_seconds_ago=900, seen_seconds_ago=300)
    env = {
        "TETHER_ANNOUNCE_TO": "log",
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": "0.5",
        "TETHER_SWEEP_SCHEDULE_SECONDS": "2",
        "TETHER_SWEEP_TIME_MARGIN_SECONDS": "1",
    }

    def answer_after_the_first_question(method: str, connection_id: str) -> None:
        if gateway.calls.count((method, connection_id)) > 1:
            gateway.malformed.discard(connection_id)

    with connections_standin.serve() as gateway:
        gateway.set_alive("busy=", idle_seconds=0)
        # The first answer cannot be read: its call fails, once, with no retry.
        gateway.malformed.add("busy=")
        gateway.on_request = answer_after_the_first_question
        result = run_tether(
            "sweep", "--keep-checking", "--database-url", database_url,
            "--endpoint-url", gateway.url, env=env,
        )  # fmt: skip
    assert gateway.calls.count(("GET", "busy=")) == 2
    assert result.returncode == 0, result.stderr
    assert "not checked" not in result.stdout + result.stderr
    assert (
        "1 call(s) to the gateway raised an unexpected error (a bug: its traceback is in the"
        " log): a later check asked again about those suspects"
    ) in result.stdout
    # Asked about: the gateway's last sign of life is now the session's.
    row = db.execute(
        "select is_active, last_seen_at > now() - interval '1 minute' as refreshed"
        " from public.conversation_sessions where connection_id = 'busy='"
    ).fetchone()
    assert row == {"is_active": True, "refreshed": True}


def test_a_run_whose_every_check_failed_says_how_many_its_last_left_unchecked(
    database_url: str, make_session: SessionFactory
) -> None:
    """--keep-checking against a gateway that never answers: each check asked about the
    one suspect, and failed. The report said every one of those calls left its suspects
    unchecked ("3 call(s) ... failed: those suspects were not checked"), where stderr
    said 1: only the last check's were, the others were asked again."""
    make_session(connection_id="silent=", started_seconds_ago=900, seen_seconds_ago=300)
    env = {
        "TETHER_ANNOUNCE_TO": "log",
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": "0.5",
        "TETHER_SWEEP_SCHEDULE_SECONDS": "2",
        "TETHER_SWEEP_TIME_MARGIN_SECONDS": "1",
    }
    result = run_tether(
        "sweep", "--keep-checking", "--json", "--database-url", database_url,
        "--endpoint-url", "http://127.0.0.1:9/prod", env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    calls = json.loads(result.stdout)["gateway_errors"]
    assert calls > 1
    # What the exit status stands for, readable by the script that got it.
    assert json.loads(result.stdout)["unchecked"] == 1
    assert "tether sweep: 1 call(s) to the gateway failed" in result.stderr
    words = run_tether(
        "sweep", "--keep-checking", "--database-url", database_url,
        "--endpoint-url", "http://127.0.0.1:9/prod", env=env,
    )  # fmt: skip
    assert words.returncode == 1, words.stderr
    failed_line = next(line for line in words.stdout.splitlines() if "failed:" in line)
    assert failed_line.endswith(
        ": the 1 of its last check left their suspects unchecked; a later check asked again"
        " about the others"
    ), failed_line


def test_sweep_says_which_checks_an_outage_cut_short(
    database_url: str, server_url: str, db: Conn, make_session: SessionFactory
) -> None:
    make_session(connection_id="old=", started_seconds_ago=3 * 3600, seen_seconds_ago=60)
    switch = functools.partial(allow_connections, server_url, database_url)
    env = {
        **os.environ,
        "TETHER_ANNOUNCE_TO": "log",
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": "0.5",
        "TETHER_SWEEP_SCHEDULE_SECONDS": "4",
        "TETHER_SWEEP_TIME_MARGIN_SECONDS": "1",
    }
    db.close()  # the database turns new connections away; this one would outlive that
    switch(False)
    tether = Path(sys.executable).with_name("tether")
    command = [str(tether), "sweep", "--keep-checking", "--database-url", database_url]
    failed = 0
    try:
        with subprocess.Popen(  # noqa: S603 - our own console script
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        ) as sweep:
            assert sweep.stderr is not None and sweep.stdout is not None
            for line in sweep.stderr:
                if "check failed: the database is unavailable" in line:
                    failed += 1
                    if failed == 2:  # the database is back for the run's next checks
                        switch(True)
            stdout = sweep.stdout.read()
            assert sweep.wait(timeout=60) == 0
    finally:
        switch(True)
    assert failed >= 2
    assert f"{failed} check(s) cut short: the database was unavailable" in stdout
    assert "ended 1 session(s): 1 max_duration" in stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["words", "json"])
def test_a_sweep_whose_announcements_were_refused_says_so_and_fails(
    database_url: str, make_session: SessionFactory, aws: str, as_json: bool
) -> None:
    """EventBridge refused the run's announcements (here: no such bus). They stay
    queued, but a run from cron or a runbook exited 0, as if every end had gone out:
    only the report's line said otherwise. Exit 1, as for a suspect left unchecked."""
    make_session(connection_id="ended=", started_seconds_ago=900, ended_seconds_ago=60)
    result = run_tether(
        "sweep", "--database-url", database_url, *(["--json"] if as_json else []),
        env={"TETHER_AWS_ENDPOINT_URL": aws, "TETHER_EVENT_BUS_NAME": "no-such-bus"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "tether sweep: 1 end(s) could not be announced and stay queued" in result.stderr, (
        result.stderr
    )
    if as_json:
        report = json.loads(result.stdout)
        assert (report["announced"], report["announce_failed"]) == (0, 1)
        assert report["unannounced"] == 1
    else:
        assert "1 announcement(s) failed and stay queued for the next sweep" in result.stdout

    # Once EventBridge takes them, the next run announces them and succeeds.
    swept = run_tether("sweep", "--database-url", database_url, "--announce-to", "log")
    assert swept.returncode == 0, swept.stderr
    assert "announced 1, redelivered 1" in swept.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["words", "json"])
def test_a_run_whose_later_check_announced_what_was_refused_succeeds(
    database_url: str, make_session: SessionFactory, event_bus: EventBus, aws: str, as_json: bool
) -> None:
    """--keep-checking: the first check's announcement was refused, a later check's went
    out. Nothing stays queued, so the run succeeds, as when a later check asks again
    about a suspect."""
    make_session(connection_id="ended=", started_seconds_ago=900, ended_seconds_ago=60)
    events = boto3.client("events", endpoint_url=aws, region_name=AWS_REGION)
    # The bus is gone for the first check and back for the next.
    events.delete_event_bus(Name=event_bus.name)
    env = {
        "TETHER_AWS_ENDPOINT_URL": aws,
        "TETHER_EVENT_BUS_NAME": event_bus.name,
        "TETHER_SWEEP_CHECK_EVERY_SECONDS": "1",
        "TETHER_SWEEP_SCHEDULE_SECONDS": "4",
        "TETHER_SWEEP_TIME_MARGIN_SECONDS": "1",
    }
    tether = Path(sys.executable).with_name("tether")
    command = [str(tether), "sweep", "--keep-checking", "--database-url", database_url]
    command += ["--json"] if as_json else []
    with subprocess.Popen(  # noqa: S603 - our own console script
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    ) as sweep:
        assert sweep.stderr is not None and sweep.stdout is not None
        for line in sweep.stderr:
            if "EventBridge did not accept SessionEnded" in line:
                events.create_event_bus(Name=event_bus.name)
                break
        stderr = sweep.stderr.read()
        stdout = sweep.stdout.read()
        assert sweep.wait(timeout=60) == 0, stderr
    assert "could not be announced" not in stderr
    if as_json:
        report = json.loads(stdout)
        assert (report["announce_failed"], report["announced"]) == (1, 1)
    else:
        assert (
            "1 announcement(s) failed: ResourceNotFoundException; a later check announced 1"
            " end(s), 0 end(s) stay queued for the next sweep"
        ) in stdout
        assert "announced 1, redelivered 1" in stdout


def test_a_run_whose_every_check_was_refused_does_not_say_a_later_one_announced(
    database_url: str, make_session: SessionFactory, aws: str
) -> None:
    """--keep-checking with a bus that refuses throughout: each check tries the one end
    again, so more announcements failed than ends stay queued, and the report said "a
    later check announced the others" though none was announced."""
    make_session(connection_id="ended=", started_seconds_ago=900, ended_seconds_ago=60)
    result = run_tether(
        "sweep", "--keep-checking", "--database-url", database_url,
        env={
            "TETHER_AWS_ENDPOINT_URL": aws,
            "TETHER_EVENT_BUS_NAME": "no-such-bus",
            "TETHER_SWEEP_CHECK_EVERY_SECONDS": "1",
            "TETHER_SWEEP_SCHEDULE_SECONDS": "4",
            "TETHER_SWEEP_TIME_MARGIN_SECONDS": "1",
        },
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "tether sweep: 1 end(s) could not be announced and stay queued" in result.stderr
    assert "announced 0," in result.stdout, result.stdout
    assert "a later check announced" not in result.stdout, result.stdout
    assert "1 end(s) stay queued for the next sweep" in result.stdout, result.stdout


def _without_region(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"}
    }
    env["HOME"] = str(home)  # no ~/.aws/config with a region either
    env["AWS_CONFIG_FILE"] = str(home / "no-such-config")
    return {**env, **extra}


@pytest.mark.usefixtures("orphans")
def test_close_orphans_without_a_region_says_what_happened_and_releases_the_queue(
    database_url: str, db: Conn, tmp_path: Path
) -> None:
    result = subprocess.run(  # noqa: S603 - our own console script
        [
            str(Path(sys.executable).with_name("tether")),
            "close-orphans",
            "--older-than",
            "2h",
            "--apply",
            "--yes",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_without_region(tmp_path),
    )
    # Ended and unannounced: it exited 0, as if all was done; a script must see it.
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "ended 18 session(s) with reason orphan_cleanup; announced 0" in result.stdout
    assert "18 announcement(s) stay queued for the sweep to deliver" in result.stdout
    assert "no AWS region configured" in result.stdout
    assert "tether close-orphans: 18 end(s) could not be announced and stay queued" in (
        result.stderr
    )
    # Nothing stays leased: the next sweep (or --announce-to log) takes them at once.
    assert db.execute(
        "select count(*) as n from public.conversation_session_announcements"
        " where announce_after > now()"
    ).fetchone() == {"n": 0}

    logged = run_tether(
        "close-orphans",
        "--older-than",
        "2h",
        "--apply",
        "--yes",
        "--database-url",
        database_url,
        "--announce-to",
        "log",
    )
    assert "no active session started more than 2 hours ago" in logged.stdout
    swept = run_tether("sweep", "--announce-to", "log", "--json", "--database-url", database_url)
    assert json.loads(swept.stdout)["announced"] == 18


@pytest.mark.usefixtures("orphans")
def test_close_orphans_counts_on_stderr_every_end_left_unannounced(
    database_url: str, tmp_path: Path
) -> None:
    """The announcing stops at the first batch refused: stdout said 18 stay queued,
    stderr that 5 could not be announced, as if the other 13 had gone out."""
    result = subprocess.run(  # noqa: S603 - our own console script
        [TETHER, "close-orphans", "--older-than", "2h", "--apply", "--yes",
         "--database-url", database_url],
        capture_output=True, text=True, timeout=120, check=False,
        env=_without_region(tmp_path, TETHER_SWEEP_BATCH_SIZE="5"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "18 announcement(s) stay queued for the sweep to deliver" in result.stdout
    assert "tether close-orphans: 18 end(s) could not be announced and stay queued" in (
        result.stderr
    )


@pytest.mark.usefixtures("orphans")
def test_close_orphans_whose_announcements_were_refused_fails_and_says_what_it_did(
    database_url: str, aws: str
) -> None:
    """EventBridge refused the announcements (no such bus): the sessions are ended and
    their ends queued. --json printed the outcome and exited 0, as if all was done."""
    result = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes", "--json",
        "--database-url", database_url,
        env={"TETHER_AWS_ENDPOINT_URL": aws, "TETHER_EVENT_BUS_NAME": "no-such-bus"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["ended"], outcome["announced"], outcome["queued"]) == (18, 0, 18)
    assert outcome["announce_error"] == "ResourceNotFoundException"
    assert (
        "tether close-orphans: 18 end(s) could not be announced and stay queued"
        " (ResourceNotFoundException)"
    ) in result.stderr
    # Nothing left to end, nothing announced by it: what waits is the sweep's, not a failure.
    again = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes", "--json",
        "--database-url", database_url,
        env={"TETHER_AWS_ENDPOINT_URL": aws, "TETHER_EVENT_BUS_NAME": "no-such-bus"},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["queued"] == 18


@pytest.mark.usefixtures("orphans")
def test_aws_region_alone_is_enough(
    database_url: str, db: Conn, event_bus: EventBus, aws: str, tmp_path: Path
) -> None:
    env = _without_region(
        tmp_path,
        AWS_REGION="us-east-1",
        TETHER_AWS_ENDPOINT_URL=aws,
        TETHER_EVENT_BUS_NAME=event_bus.name,
    )
    result = subprocess.run(  # noqa: S603 - our own console script
        [
            str(Path(sys.executable).with_name("tether")),
            "close-orphans",
            "--older-than",
            "2h",
            "--apply",
            "--yes",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "announced 18" in result.stdout
    assert len(event_bus.received()) == 18


def test_a_one_off_sweep_that_cannot_reach_the_database_says_so_and_fails() -> None:
    """Said by a one-off command, "the next run carries on" would promise a run that
    nobody scheduled; the password is never shown."""
    result = run_tether(
        "sweep", "--database-url", "postgresql://tether:hunter2-secret@127.0.0.1:9/app",
        env={"TETHER_ANNOUNCE_TO": "log"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
    assert "sweep failed; nothing done" in result.stderr
    assert "next run" not in result.stderr
    assert "hunter2-secret" not in result.stdout + result.stderr


def test_commands_on_a_database_without_tether_s_sql_say_to_migrate(
    empty_database_url: str,
) -> None:
    # A raw "function ... does not exist" named no way out.
    for command in (
        ("sweep", "--announce-to", "log"),
        ("close-orphans", "--older-than", "2h"),
        ("sessions",),
    ):
        result = run_tether(*command, "--database-url", empty_database_url)
        assert result.returncode == 1, result.stderr
        assert "`tether migrate` applies them" in result.stderr, result.stderr
        assert result.stdout == ""


def _ctrl_c_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_it_was_heard_and_what_became_of_the_work(database_url: str) -> None:
    started = subprocess.Popen(  # noqa: S603 - our own console script
        [
            TETHER,
            "sweep",
            "--keep-checking",
            "--announce-to",
            "log",
            "--database-url",
            database_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a job started in the background (CI's, often) inherits
        # SIGINT ignored, and Python then installs no Ctrl-C handler at all.
        preexec_fn=_ctrl_c_as_at_a_terminal,  # noqa: PLW1509 - one thread starts it
    )
    time.sleep(3)  # checking, every 10 s, for a minute
    started.send_signal(signal.SIGINT)
    out, err = started.communicate(timeout=60)
    assert started.returncode == 130, err
    assert "tether sweep: interrupted; what it had done is kept" in err
    assert out == ""


def _close_orphans_under_way(database_url: str, db: Conn, **popen: Any) -> subprocess.Popen[str]:
    """close-orphans over 20,000 orphans, 50 a batch, once it said it ended its first."""
    db.execute(
        "insert into public.conversation_sessions"
        " (connection_id, user_id, session_start, last_seen_at)"
        " select 'old' || g, gen_random_uuid(), now() - interval '3 days',"
        " now() - interval '3 days' from generate_series(1, 20000) g"
    )
    started = subprocess.Popen(  # noqa: S603 - our own console script
        [
            TETHER,
            *("close-orphans", "--older-than", "2h", "--apply", "--yes"),
            *("--announce-to", "log", "--database-url", database_url),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TETHER_SWEEP_BATCH_SIZE": "50"},
        **popen,
    )
    assert started.stdout is not None
    for line in started.stdout:
        if line.startswith("  ended "):
            break
    return started


def test_an_interrupted_close_orphans_says_how_many_it_had_ended(
    database_url: str, db: Conn
) -> None:
    """It said only 'interrupted; what it had done is kept': not how many were ended,
    nor that their announcements wait for the sweep."""
    started = _close_orphans_under_way(database_url, db, preexec_fn=_ctrl_c_as_at_a_terminal)
    started.send_signal(signal.SIGINT)
    _, err = started.communicate(timeout=60)
    assert started.returncode == 130, err
    said = re.search(r"interrupted after ending (\d+) session\(s\)", err)
    assert said is not None, err
    ended = db.execute(
        "select count(*) as n from public.conversation_sessions where not is_active"
    ).fetchone()
    assert ended is not None
    # Said is what it knew of; a batch under way may have ended one more batch.
    assert 0 < int(said.group(1)) <= int(str(ended["n"])) <= int(said.group(1)) + 50
    assert "wait in the outbox for the sweep" in err
    assert "Traceback" not in err


def _four_ended_then_one_refused(db: Conn, make_session: SessionFactory, *, silent: bool) -> None:
    """Four old sessions (orphans; silent as long, for the sweep), then the newest, in
    the last batch of 2, which the table's constraint refuses to end."""
    for hours in (9, 8, 7, 6, 3):
        name = "kept=" if hours == 3 else f"old{9 - hours}="
        make_session(
            connection_id=name,
            started_seconds_ago=hours * 3600,
            seen_seconds_ago=hours * 3600 if silent else None,
        )
    db.execute(
        "alter table public.conversation_sessions add constraint kept_stays_open"
        " check (connection_id <> 'kept=' or session_end is null) not valid"
    )


def test_close_orphans_refused_after_a_batch_was_ended_says_what_it_ended(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """A later batch refused by the database (a constraint of the table's, class 23)
    came after earlier ones were committed: it exited 2, the code that says nothing was
    done, with the refusal alone. It exits 1, the code of a failure, saying what it had
    ended."""
    _four_ended_then_one_refused(db, make_session, silent=False)
    result = run_tether(
        *("close-orphans", "--older-than", "2h", "--apply", "--yes"),
        *("--announce-to", "log", "--database-url", database_url),
        env={"TETHER_SWEEP_BATCH_SIZE": "2"},
    )
    assert result.returncode == 1, result.stderr
    assert "kept_stays_open" in result.stderr
    assert "ended 4 session(s) before" in result.stderr, result.stderr
    ended = {row["connection_id"]: row["is_active"] for row in _state(db)}
    assert ended == {"kept=": True, **{f"old{index}=": False for index in range(4)}}


def test_a_sweep_refused_after_a_batch_was_ended_fails_and_says_what_it_did(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """As close-orphans: a later batch refused by the database exited 2, the code that
    says nothing was done, after the earlier ones were committed."""
    _four_ended_then_one_refused(db, make_session, silent=True)
    result = run_tether(
        *("sweep", "--announce-to", "log", "--database-url", database_url),
        env={"TETHER_SWEEP_BATCH_SIZE": "2"},
    )
    assert result.returncode == 1, result.stderr
    assert "tether sweep: stopped part way" in result.stderr
    assert "kept_stays_open" in result.stderr
    said = json_lines(result.stderr)
    [failed] = [line for line in said if line.get("message") == "sweep failed; what it did is kept"]
    assert failed["ended"] == 4
    ended = {row["connection_id"]: row["is_active"] for row in _state(db)}
    assert ended == {"kept=": True, **{f"old{index}=": False for index in range(4)}}


def test_a_sweep_refused_at_its_first_end_says_nothing_was_done(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Refused by the database (a constraint of the table's) at its very first end, it
    exited 1 saying that what the run had done is kept, though it had done nothing. It
    exits 2 with the refusal and says nothing was done, as close-orphans does when its
    first batch is refused."""
    make_session(connection_id="kept=", started_seconds_ago=3 * 3600, seen_seconds_ago=3 * 3600)
    db.execute(
        "alter table public.conversation_sessions add constraint kept_stays_open"
        " check (connection_id <> 'kept=' or session_end is null) not valid"
    )
    result = run_tether("sweep", "--announce-to", "log", "--database-url", database_url)
    assert result.returncode == 2, result.stderr
    assert "kept_stays_open" in result.stderr
    assert "nothing was done: no session was ended" in result.stderr, result.stderr
    assert "what the run had done is kept" not in result.stderr
    # Its log line, as the function's would read in CloudWatch, says so too.
    assert "sweep failed; nothing done" in result.stderr
    assert "what it did is kept" not in result.stderr
    assert [row["is_active"] for row in _state(db)] == [True]


def test_a_sweep_whose_announcements_went_out_before_a_refusal_says_it_did_something(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Its only work, announcing an end, went out before the database refused to record
    it (a check of the table's, class 23): the run did something, and says so."""
    make_session(connection_id="queued=", started_seconds_ago=600, ended_seconds_ago=300)
    db.execute(
        """
        create function public.refuse_recording_as_a_check() returns trigger
        language plpgsql as $$
        begin
          if new.announced_at is distinct from old.announced_at then
            raise exception using errcode = 'check_violation',
              message = 'announced_at is not to be written here';
          end if;
          return new;
        end $$;
        create trigger refuse_recording_as_a_check before update on public.conversation_sessions
          for each row execute function public.refuse_recording_as_a_check();
        """
    )
    result = run_tether("sweep", "--announce-to", "log", "--database-url", database_url)
    assert result.returncode == 1, result.stderr
    assert "tether sweep: stopped part way" in result.stderr
    assert "announced_at is not to be written here" in result.stderr
    said = json_lines(result.stderr)
    [failed] = [line for line in said if line.get("message") == "sweep failed; what it did is kept"]
    assert failed["announced_unrecorded"] == 1


def test_a_close_orphans_the_database_left_says_how_many_it_had_ended(
    server_url: str, database_url: str, db: Conn
) -> None:
    """Cut short by the database going away, it says that it had ended sessions already,
    that their announcements wait for the sweep, and to run it again; and it exits 1,
    not 2 (nothing done)."""
    started = _close_orphans_under_way(database_url, db)
    try:
        allow_connections(server_url, database_url, False)
        _, err = started.communicate(timeout=60)
    finally:
        allow_connections(server_url, database_url, True)
    assert started.returncode == 1, err
    said = re.search(r"ended (\d+) session\(s\) before this stopped it", err)
    assert said is not None, err
    assert "wait in the outbox for the sweep; run it again to end the rest" in err
    assert "cannot connect to the database" in err
    assert "Traceback" not in err
    with psycopg.connect(database_url) as conn:
        ended, queued = conn.execute(
            "select (select count(*) from public.conversation_sessions where not is_active),"
            " (select count(*) from public.conversation_session_announcements)"
        ).fetchone() or (0, 0)
    # Said is what it knew of; a batch under way may have ended one more batch.
    assert 0 < int(said.group(1)) <= ended <= int(said.group(1)) + 50
    assert queued == ended


def test_a_sweep_killed_while_announcing_leaves_its_claims_to_the_next_run(
    aws: str, database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Killed while PutEvents hangs (its Lambda timeout), a run held the ends it had
    claimed for the rest of a minute's lease. It holds them no longer than its own time."""
    make_session(connection_id="claimed=", started_seconds_ago=60, ended_seconds_ago=30)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts, never answers
        started = time.monotonic()
        run = subprocess.Popen(  # noqa: S603 - our own console script
            [
                TETHER,
                *("sweep", "--time-limit", "3s", "--announce-to", "eventbridge"),
                *("--database-url", database_url),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={
                **os.environ,
                "TETHER_AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
                "TETHER_SWEEP_TIME_MARGIN_SECONDS": "1",
            },
        )
        try:
            while not db.execute(
                "select 1 from public.conversation_session_announcements where claim_count > 0"
            ).fetchone():
                assert time.monotonic() - started < 20, "the run never claimed the end"
                time.sleep(0.05)
        finally:
            run.kill()
            run.wait()
    # Its time (3 s, and the margin's 1 s to finish) began before its claim: it is over
    # by then, a minute's lease is not.
    time.sleep(4.2)
    again = run_tether("sweep", "--announce-to", "log", "--json", "--database-url", database_url)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["announced"], report["redelivered"]) == (1, 1)


def test_a_database_that_refuses_to_record_announcements_fails_the_run(
    database_url: str, db: Conn, make_session: SessionFactory
) -> None:
    """Every end would be announced again at each lease, for good: the run fails, so
    that the failure is counted and alarmed on. The ends themselves are kept."""
    from tests.integration.test_disconnect import REFUSE_RECORDING  # noqa: PLC0415

    make_session(connection_id="refused=", started_seconds_ago=3 * 3600)
    db.execute(REFUSE_RECORDING)
    closed = run_tether(
        "close-orphans", "--older-than", "2h", "--apply", "--yes", "--announce-to", "log",
        "--database-url", database_url,
    )  # fmt: skip
    assert closed.returncode == 1, closed.stdout + closed.stderr
    assert "announced_at is not to be written here" in closed.stderr
    [row] = _state(db)
    assert (row["is_active"], row["end_reason"]) == (False, "orphan_cleanup")
    # Its lease over, the sweep claims it again, announces it, is refused again.
    db.execute("update public.conversation_session_announcements set announce_after = now()")
    swept = run_tether("sweep", "--announce-to", "log", "--database-url", database_url)
    assert swept.returncode == 1, swept.stdout + swept.stderr
    assert "announced_at is not to be written here" in swept.stderr


@pytest.mark.usefixtures("orphans")
def test_a_close_orphans_the_database_left_after_announcing_says_what_it_had_done(
    server_url: str, database_url: str
) -> None:
    """The database going away once the ends were made and announced (the announcements
    then unrecorded), close-orphans said only that it could not connect: an operator
    read that nothing was done, though 18 sessions were ended. It says what it did."""

    class PutEventsThenTheDatabaseGoes(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            entries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["Entries"]
            with gone:  # PutEvents calls come a few at a time: the database goes once
                if not gone_already:
                    allow_connections(server_url, database_url, False)
                    gone_already.append(True)
            body = json.dumps(
                {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in entries]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    gone, gone_already = threading.Lock(), list[bool]()
    bus = ThreadingHTTPServer(("127.0.0.1", 0), PutEventsThenTheDatabaseGoes)
    threading.Thread(target=bus.serve_forever, daemon=True).start()
    try:
        result = run_tether(
            *("close-orphans", "--older-than", "2h", "--apply", "--yes"),
            *("--announce-to", "eventbridge", "--database-url", database_url),
            env={
                "TETHER_AWS_ENDPOINT_URL": f"http://127.0.0.1:{bus.server_address[1]}",
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        bus.shutdown()
        bus.server_close()
        allow_connections(server_url, database_url, True)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "ended 18 session(s) and announced 18" in result.stderr, result.stderr
    assert "18 of them went out but could not be recorded" in result.stderr
    assert "cannot connect to the database" in result.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "select count(*) from public.conversation_sessions where not is_active"
        ).fetchone() == (18,)


def test_close_orphans_with_none_to_end_says_what_still_waits_to_be_announced(
    database_url: str, make_session: SessionFactory
) -> None:
    """Run again after an earlier run was cut short while announcing, it found no
    orphan and answered "queued": 0 (and, without --json, said nothing of them), though
    its ends still waited in the outbox: a script read that all had gone out."""
    for _ in range(3):
        make_session(started_seconds_ago=3 * 3600, ended_seconds_ago=600)
    common = ("close-orphans", "--older-than", "2h", "--announce-to", "log")
    applied = run_tether(*common, "--apply", "--yes", "--json", "--database-url", database_url)
    assert applied.returncode == 0, applied.stderr
    report = json.loads(applied.stdout)
    assert (report["found"], report["announced"], report["queued"]) == (0, 0, 3)
    said = run_tether(*common, "--apply", "--yes", "--database-url", database_url)
    assert "no active session started more than 2 hours ago" in said.stdout
    assert "3 announcement(s) stay queued for the sweep to deliver" in said.stdout


@pytest.mark.usefixtures("orphans")
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_close_orphans_whose_announcements_went_out_unrecorded_says_so(
    database_url: str, as_json: bool
) -> None:
    """The database could not record the announcements as sent (their rows held past the
    lock timeout), then answered again: close-orphans exited 0 saying "announced 18" and
    "18 announcement(s) stay queued for the sweep to deliver", not that those went out
    and will be announced again (--json: nothing of them at all)."""

    class PutEventsThenTheRowsAreHeld(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            entries = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["Entries"]
            with holding:
                if not held.info.transaction_status:  # idle: not yet held
                    held.execute(
                        "select 1 from public.conversation_session_announcements for update"
                    )
            body = json.dumps(
                {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in entries]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    holding = threading.Lock()
    bus = ThreadingHTTPServer(("127.0.0.1", 0), PutEventsThenTheRowsAreHeld)
    threading.Thread(target=bus.serve_forever, daemon=True).start()
    with psycopg.connect(database_url) as held:
        try:
            result = run_tether(
                *("close-orphans", "--older-than", "2h", "--apply", "--yes"),
                *(["--json"] if as_json else []),
                *("--announce-to", "eventbridge", "--database-url", database_url),
                env={
                    "TETHER_AWS_ENDPOINT_URL": f"http://127.0.0.1:{bus.server_address[1]}",
                    "AWS_ACCESS_KEY_ID": "local",
                    "AWS_SECRET_ACCESS_KEY": "local",
                    "AWS_DEFAULT_REGION": "us-east-1",
                },
            )
        finally:
            bus.shutdown()
            bus.server_close()
            held.rollback()
    assert result.returncode == 0, result.stderr
    if as_json:
        report = json.loads(result.stdout)
        assert (report["ended"], report["announced"]) == (18, 18)
        assert report["announced_unrecorded"] == 18
        # Their lease, this run's claim, holds them until it ends.
        assert (report["queued"], report["held"]) == (0, 18)
    else:
        assert "ended 18 session(s) with reason orphan_cleanup; announced 18" in result.stdout
        assert (
            "18 announcement(s) went out but the database could not record them as sent:"
            " they will be announced again"
        ) in result.stdout, result.stdout
        assert (
            "18 announcement(s) held by a lease for whoever is announcing them, this run's"
            " unrecorded ones among them: the sweep delivers them once it ends"
        ) in result.stdout
