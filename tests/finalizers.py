"""Finalizers the SessionEnded tests name in TETHER_FINALIZER."""

from __future__ import annotations

from tether.models import SessionEnded

calls: list[SessionEnded] = []
failures_left = 0


def recording(detail: SessionEnded) -> None:
    global failures_left  # noqa: PLW0603 - test double state
    if failures_left > 0:
        failures_left -= 1
        raise RuntimeError("memory store unavailable")
    calls.append(detail)


not_callable = 42

lease_probe_url: str | None = None
leases_seen: list[float] = []


def lease_probe(detail: SessionEnded) -> None:
    """Records how long the claim this call runs under still has to run."""
    import psycopg  # noqa: PLC0415

    assert lease_probe_url is not None
    with psycopg.connect(lease_probe_url) as conn:
        row = conn.execute(
            "select extract(epoch from finalize_after - now())::float8"
            " from public.conversation_sessions where session_id = %s",
            (detail.session_id,),
        ).fetchone()
    assert row is not None
    leases_seen.append(float(row[0]))


LEAKED_PASSWORD = "S3cretPass"  # the secret the test looks for
LEAKED_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abcDEF123"


def leaky(detail: SessionEnded) -> None:
    """Fails as a careless finalizer does: with its connection string in the message,
    and a token in a note added on the way up."""
    failure = RuntimeError(
        f"could not reach postgresql://mem:{LEAKED_PASSWORD}@db.example.com:5432/mem"
        f" with token={LEAKED_TOKEN}"
    )
    failure.add_note(f"while calling https://memory.example.com/v1/save?token={LEAKED_TOKEN}")
    raise failure
