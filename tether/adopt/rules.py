"""The rules by which adoption reads the old writers' rows (``sql/belief.sql``), as
SQL composed for the table at hand, and the kinds of inconsistency they name."""

from __future__ import annotations

from psycopg import sql

from tether.adopt.catalog import Shape, sql_file, trusted

KINDS: dict[str, str] = {
    "active_with_end": "is_active is true, but an end is recorded: the end is believed, and"
    " the session is ended (reason unrecorded)",
    "inactive_without_end": "is_active is false with no session_end: it ended at ended_at, else"
    " at session_start + duration_seconds, else at an unknown time (end_unknown, recorded at"
    " its start)",
    "end_before_start": "session_end before session_start: not believable; the next recorded"
    " moment is, else the end is unknown (end_unknown, at the start)",
    "end_in_future": "session_end after now: not believable; the next recorded moment is, else"
    " the end is unknown",
    "no_start": "no session_start, or one not every client can read (an infinite one, or one"
    " before 0001-01-02 00:00 UTC: west of UTC, the first hours of year 1 are year 1 BC;"
    " Go's and .NET's zero time, 0001-01-01 00:00 UTC, is one): it starts at its recorded"
    " end (else at the adoption) and counts as ended",
    "start_in_future": "session_start after now: it starts now, the latest it can",
    "is_active_null": "is_active is null: it follows the end",
    "ended_at_differs": "ended_at disagrees with session_end: it becomes the believed end",
    "duration_differs": "duration_seconds disagrees with the believed end (or is set on a live"
    " session): computed again from the end",
}
"""Every kind ``belief.sql`` can name, with the rule applied (the README says the same)."""


def belief() -> sql.SQL:
    return trusted(sql_file("belief.sql"))


def row_input(shape: Shape, row: str = "s") -> sql.Composed:
    """The select list that gives ``belief.sql`` its row ``o`` from the table's row
    ``row``, for the columns this table has (and had before the adoption)."""
    s = sql.Identifier(row)
    is_active = (
        sql.SQL("{}.is_active").format(s)
        if shape.original("is_active")
        else sql.SQL("({}.session_end is null)").format(s)
        if shape.original("session_end")
        else sql.SQL("true")
    )
    session_end = (
        sql.SQL("{}.session_end").format(s)
        if shape.original("session_end")
        else sql.SQL("null::timestamptz")
    )
    has_ended_at = shape.ended_at_managed
    ended_at = sql.SQL("{}.ended_at").format(s) if has_ended_at else sql.SQL("null::timestamptz")
    has_duration = shape.original("duration_seconds")
    duration = (
        sql.SQL("{}.duration_seconds::numeric").format(s)
        if has_duration
        else sql.SQL("null::numeric")
    )
    return sql.SQL(
        "select {is_active} as is_active, {s}.session_start as session_start,"
        " {session_end} as session_end, {ended_at} as ended_at,"
        " {duration} as duration_seconds, {has_ended_at} as has_ended_at,"
        " {has_duration} as has_duration"
    ).format(
        is_active=is_active,
        s=s,
        session_end=session_end,
        ended_at=ended_at,
        duration=duration,
        has_ended_at=sql.Literal(has_ended_at),
        has_duration=sql.Literal(has_duration),
    )


def original_duration(shape: Shape, row: str = "s") -> sql.Composable:
    """The duration as the old writers stored it, as JSON (for the corrections)."""
    if shape.original("duration_seconds"):
        return sql.SQL("to_jsonb({}.duration_seconds)").format(sql.Identifier(row))
    return sql.SQL("null::jsonb")
