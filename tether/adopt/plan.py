"""The steps of an adoption, each with the lock it takes, whether that lock stops
writes, how long it holds it, and how long the step takes.

Estimates come from the table's size and a timed sequential scan of it on the
server at hand (``scan_seconds``): a step costs a multiple of one scan. The
multiples were measured by ``bench/adoption_blocking.py`` (1M rows) and are
rounded up; they are estimates, said as such."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tether.adopt.catalog import ADDED_COLUMNS, DURATION_TYPES, Shape, index_statements
from tether.durations import estimate

BATCH_SIZE = 5_000
"""Rows per backfill transaction: their row locks are held for a fraction of a second."""

# Cost of each step in sequential scans of the table, measured by
# bench/adoption_blocking.py on 1M rows (rounded up).
BACKFILL_SCANS = 330.0
VACUUM_SCANS = 5.0
VALIDATE_SCANS_EACH = 2.0
INDEX_SCANS_EACH = 8.0
REWRITE_SCANS = 8.0
"""--finish: the table is written again and the generated columns computed."""
REBUILD_SCANS_PER_INDEX = 1.5
FINISH_FIXED_SECONDS = 0.5
"""--finish's catalog work (dropping and creating views, policies) whatever the size."""
CATALOG_SECONDS = 0.05
"""A step that changes the catalog only, once it has its lock."""
VALIDATED_CHECKS = 8

STEP_NAMES = (
    "ledger",
    "prepare",
    "columns",
    "backfill",
    "vacuum",
    "validate",
    "duration",
    "indexes",
    "security",
    "migrations",
)
FINISH = "finish"


@dataclass(frozen=True)
class Sizing:
    rows: int
    bytes: int
    scan_seconds: float
    """One timed sequential scan of the table (count(*))."""
    indexes: int


@dataclass(frozen=True)
class Step:
    name: str
    does: str
    lock: str
    """The strongest table lock the step takes."""
    blocks_writes: bool
    """Whether that lock stops $connect's and the old server's writes."""
    holds: str
    """How long the step holds it."""
    estimate_seconds: float
    done: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def duration_conversion(shape: Shape) -> str | None:
    """The type duration_seconds has, if it must become numeric at --apply."""
    column = shape.columns.get("duration_seconds")
    if column is None or column.type == "numeric" or column.type not in DURATION_TYPES:
        return None
    return column.type


def apply_steps(
    shape: Shape, sizing: Sizing, *, batch_size: int, lock_timeout: float
) -> list[Step]:
    scan = max(sizing.scan_seconds, 0.001)
    batches = max(1, -(-sizing.rows // batch_size))
    backfill = BACKFILL_SCANS * scan
    waits = f"at most {lock_timeout:g}s waiting for it, then retried"
    missing = [name for name, _ in ADDED_COLUMNS if name not in shape.columns]
    converted = duration_conversion(shape)
    steps = [
        Step(
            "ledger",
            "tether's schema and ledger, the adoption's own tables; the migrations that come"
            " before the table's (the roles and auth stand-ins, where missing)",
            "none on the table",
            False,
            "-",
            CATALOG_SECONDS,
        ),
        Step(
            "prepare",
            "the end-reason domain, time-ordered ids, the announcement outbox",
            "none on the table",
            False,
            "-",
            CATALOG_SECONDS,
        ),
        Step(
            "columns",
            f"add {', '.join(missing) or 'no column'} (nullable, no default: the catalog only)"
            + (f"; a numeric copy of duration_seconds ({converted})" if converted else "")
            + (
                "; session_id defaults to tether_uuid_v7()"
                if "session_id" in shape.columns and shape.columns["session_id"].default is None
                else ""
            )
            + "; tether's checks, NOT VALID;"
            " the transition's trigger",
            "ACCESS EXCLUSIVE",
            True,
            f"milliseconds (catalog only); {waits}",
            CATALOG_SECONDS,
        ),
        Step(
            "backfill",
            f"read every row by the rules (connection id, end, reason, duration, last sign"
            f" of life) in {batches} batch(es) of {batch_size} by session_id",
            "ROW EXCLUSIVE and the row locks of one batch",
            False,
            f"one batch's rows for {estimate(backfill / batches)} each; inserts never wait",
            backfill,
        ),
        Step(
            "vacuum",
            "vacuum and analyze: the backfill left an old version of every row behind",
            "SHARE UPDATE EXCLUSIVE",
            False,
            estimate(VACUUM_SCANS * scan),
            VACUUM_SCANS * scan,
        ),
        Step(
            "validate",
            "validate tether's checks against the history; then SET NOT NULL on connection_id,"
            " session_start and last_seen_at, which the validated checks spare a scan",
            "SHARE UPDATE EXCLUSIVE, then ACCESS EXCLUSIVE",
            True,
            f"scans under SHARE UPDATE EXCLUSIVE; ACCESS EXCLUSIVE for milliseconds; {waits}",
            VALIDATED_CHECKS * VALIDATE_SCANS_EACH * scan + CATALOG_SECONDS,
        ),
    ]
    if converted or "duration" in shape.steps:
        steps.append(
            Step(
                "duration",
                f"duration_seconds ({converted or 'double precision'}) becomes numeric, as"
                " tether's functions return"
                " it: the filled copy takes its place; views on it are recreated",
                "ACCESS EXCLUSIVE",
                True,
                f"milliseconds (catalog only); {waits}",
                CATALOG_SECONDS,
            )
        )
    steps += [
        Step(
            "indexes",
            "build CONCURRENTLY: connection_id unique (then attached as"
            " conversation_sessions_connection_id_key), the partial indexes where is_active,"
            " user_id, session_start and the ended rows' session_end",
            "SHARE UPDATE EXCLUSIVE, then ACCESS EXCLUSIVE",
            True,
            f"builds let writes through; attaching the key takes milliseconds; {waits}",
            len(index_statements()) * INDEX_SCANS_EACH * scan + CATALOG_SECONDS,
        ),
        Step(
            "security",
            "row level security, grants, the policy letting users read their own sessions,"
            " comments, fillfactor, the outbox's delete trigger",
            "ACCESS EXCLUSIVE",
            True,
            f"milliseconds (catalog only); {waits}",
            CATALOG_SECONDS,
        ),
        Step(
            "migrations",
            "record the table's migration as adopted; run tether's later migrations (functions,"
            " views, and the columns they add), one transaction each",
            "ACCESS EXCLUSIVE",
            True,
            f"milliseconds (catalog only); {waits}",
            CATALOG_SECONDS,
        ),
    ]
    return [Step(**{**step.as_dict(), "done": shape.steps.get(step.name, False)}) for step in steps]


def finish_estimate(sizing: Sizing) -> float:
    scan = max(sizing.scan_seconds, 0.001)
    return (
        FINISH_FIXED_SECONDS
        + REWRITE_SCANS * scan
        + REBUILD_SCANS_PER_INDEX * scan * sizing.indexes
    )


def finish_step(shape: Shape, sizing: Sizing) -> Step:
    rewrite_seconds = finish_estimate(sizing)
    extra = " and ended_at" if shape.ended_at_managed else ""
    return Step(
        FINISH,
        f"is_active and duration_seconds{extra} become generated columns, as in a fresh"
        f" install: the table ({sizing.rows} rows, {sizing.bytes / 2**20:.1f} MB) is written"
        f" again, its {sizing.indexes} indexes rebuilt, what depends on those columns"
        " recreated, the transition's trigger dropped",
        "ACCESS EXCLUSIVE",
        True,
        f"the whole rewrite, {estimate(rewrite_seconds)}: reads and writes of the table wait",
        rewrite_seconds,
        shape.steps.get(FINISH, False),
    )
