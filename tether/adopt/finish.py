"""``tether adopt --finish``: once no old writer is left, give the table its final
shape, the one a fresh install has: is_active and duration_seconds generated from
session_end (and the old ended_at too, when tether kept it in step), the
transition's trigger gone.

Postgres cannot turn a column into a generated one: it is dropped and added again,
and the table is written anew under an ACCESS EXCLUSIVE lock, which stops its
reads and writes for the whole rewrite. ``plan_finish`` says what that holds and
for how long, before anything is done."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from tether.adopt import dependents, inspect, plan
from tether.adopt import lock as adopt_lock
from tether.adopt.catalog import (
    LEGACY_PREFIX,
    SYNC_FUNCTION,
    SYNC_TRIGGER,
    connect,
    may_pass_again,
    read_shape,
    said,
    said_in_full,
    sql_file,
    trusted,
)
from tether.errors import AdoptionError
from tether.locks import LockPolicy, Progress, with_lock_timeout

logger = logging.getLogger("tether.adopt")


@dataclass
class FinishPlan:
    state: str
    step: plan.Step | None = None
    recreated: list[dict[str, Any]] = field(default_factory=list)
    """What depends on the replaced columns and is created again (tether's and the team's)."""
    refusals: list[str] = field(default_factory=list)
    legacy_active: int = 0
    """Sessions the old server opened that are still active."""
    newest_legacy_start: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["step"] = self.step.as_dict() if self.step else None
        return payload


@dataclass
class FinishResult:
    lock_held_seconds: float
    recreated: list[dict[str, Any]]


def _plan(conn: psycopg.Connection[tuple[Any, ...]]) -> FinishPlan:
    shape = read_shape(conn)
    result = FinishPlan(state=inspect.state_of(shape))
    if result.state == inspect.FINISHED:
        return result
    # --finish rewriting the table while an --apply puts its trigger back (or one under
    # way read as stopped) is refused; the plan alone, a preview, takes no lock.
    if adopt_lock.held_by_another(conn):
        result.refusals.append(adopt_lock.ANOTHER_ADOPT_RUNS)
        return result
    if result.state != inspect.TRANSITIONAL or not shape.steps.get("migrations"):
        if result.state == inspect.NOT_ADOPTED:
            said = "the adoption is not applied yet: run `tether adopt --apply` first"
        elif result.state in (inspect.IN_PROGRESS, inspect.TRANSITIONAL):
            said = (
                "the adoption stopped part way through --apply: run `tether adopt --apply`"
                " to resume it, then --finish"
            )
        else:
            said = f"public.conversation_sessions is {result.state}: there is nothing to finish"
        result.refusals.append(said)
        return result
    role = inspect.check_role(conn, shape)
    if role.refusals:
        result.refusals = role.refusals
        return result
    saved_views = dependents.save(conn, shape.oid, shape.replaced_columns)
    found = saved_views.found
    blocked = [d for d in found if d.kind not in dependents.RECREATED_KINDS]
    result.refusals = [dependents.refusal(d) for d in blocked]
    result.refusals += [
        dependents.built_on_refusal(d, "--finish")
        for d in dependents.built_on_views(conn, saved_views.views)
    ]
    result.refusals += dependents.owner_refusals(
        conn, shape.oid, shape.replaced_columns, "--finish"
    )
    result.refusals += inspect.row_type_refusals(conn, shape, "--finish")
    result.refusals += dependents.generated_when_refusals(
        conn, shape.oid, shape.replaced_columns, SYNC_TRIGGER
    )
    result.recreated = [d.as_dict() for d in found if d.kind in dependents.RECREATED_KINDS]
    listed = {d["name"] for d in result.recreated}
    result.recreated += [
        {"kind": "view", "name": v.qualified, "columns": []}
        for v in saved_views.views
        if v.qualified not in listed
    ]
    row = conn.execute(
        "select count(*), max(session_start) from public.conversation_sessions"
        " where is_active and connection_id like %s",
        (LEGACY_PREFIX + "%",),
    ).fetchone()
    if row:
        result.legacy_active, result.newest_legacy_start = int(row[0]), row[1]
    result.step = plan.finish_step(shape, inspect.sizing(conn, shape))
    return result


def plan_finish(url: str) -> FinishPlan:
    """What --finish would do, lock and for how long; changes nothing."""
    with connect(url) as conn, conn.transaction():
        conn.execute("set transaction read only")
        return _plan(conn)


def finish(
    url: str, *, lock: LockPolicy | None = None, progress: Progress | None = None
) -> FinishResult:
    say = progress or (lambda _: None)
    held = 0.0
    recreated: list[dict[str, Any]] = []
    with connect(url) as conn:
        # Held until the connection closes, so no --apply starts while this rewrites.
        if not adopt_lock.take(conn):
            raise AdoptionError("cannot finish:\n  - " + adopt_lock.ANOTHER_ADOPT_RUNS)
        checked = _plan(conn)
        if checked.state == inspect.FINISHED:
            return FinishResult(0.0, [])
        if checked.refusals:
            raise AdoptionError("cannot finish:\n  - " + "\n  - ".join(checked.refusals))

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            nonlocal held, recreated
            conn.execute("lock table public.conversation_sessions in access exclusive mode")
            locked_at = time.perf_counter()
            shape = read_shape(conn)
            columns = shape.replaced_columns
            saved = dependents.save(conn, shape.oid, columns)
            blocked = [dependents.refusal(d) for d in saved.refused()]
            blocked += [
                dependents.built_on_refusal(d, "--finish")
                for d in dependents.built_on_views(conn, saved.views)
            ]
            if blocked:
                raise AdoptionError("cannot finish:\n  - " + "\n  - ".join(blocked))
            dependents.drop(conn, saved)
            conn.execute(
                sql.SQL("drop trigger if exists {} on public.conversation_sessions").format(
                    sql.Identifier(SYNC_TRIGGER)
                )
            )
            conn.execute(sql.SQL("drop function if exists {}()").format(trusted(SYNC_FUNCTION)))
            ended_at = shape.ended_at_managed
            conn.execute(
                sql.SQL(sql_file("finish.sql")).format(
                    drop_ended_at=sql.SQL(",\n  drop column ended_at" if ended_at else ""),
                    add_ended_at=sql.SQL(
                        ",\n  add column ended_at timestamptz"
                        " generated always as (session_end) stored"
                        if ended_at
                        else ""
                    ),
                )
            )
            if ended_at:
                conn.execute(sql_file("finish_ended_at.sql").encode())
            dependents.recreate(conn, saved, constraints_not_valid=False)
            conn.execute(
                "insert into tether.adoption_steps (step, finished_at) values ('finish', now())"
                " on conflict (step) do update set finished_at = now()"
            )
            recreated = [d.as_dict() for d in saved.found]
            held = time.perf_counter() - locked_at

        say("finish ...")
        started = time.perf_counter()
        try:
            with_lock_timeout(
                conn,
                "finish",
                work,
                policy=lock or LockPolicy(),
                progress=say,
                gives_up_with=AdoptionError,
            )
        except psycopg.Error as exc:
            # A connection lost mid-way (the database restarted) says, besides
            # Postgres's words, what became of the table and what to do.
            if may_pass_again(exc):
                raise AdoptionError(
                    f"finish failed: {said(exc)}. It is one transaction,"
                    " kept or rolled back whole; run `tether adopt --finish` again: it"
                    " finishes the table, or says it is finished already"
                ) from None
            # A refusal --check did not foresee: run again, it fails the same.
            raise AdoptionError(
                f"finish failed: {said_in_full(exc)}. It is one transaction: nothing of it"
                " was kept. Mend what Postgres names, then run `tether adopt --finish` again"
            ) from None
        held += 0.0 if held else time.perf_counter() - started
        conn.execute("analyze public.conversation_sessions")
    logger.info("adoption finished", extra={"lock_held_seconds": round(held, 3)})
    return FinishResult(round(held, 3), recreated)
