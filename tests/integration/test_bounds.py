"""Every bound a setting accepts is the bound its SQL function checks: a value the
settings let through is never refused by the database, and the next value out of
range is refused by both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import annotated_types
import pytest

from tether.drivers.postgres import PostgresStore
from tether.errors import InvalidInputError
from tether.models import EndReason
from tether.settings import Settings

Call = Callable[[PostgresStore, Any], object]

# (setting, the store call that passes it to SQL)
PAIRS: list[tuple[str, Call]] = [
    ("heartbeat_throttle_seconds", lambda s, v: s.touch_session("c=", v)),
    (
        "announce_lease_seconds",
        lambda s, v: s.end_session("c=", EndReason.GONE, announce_lease_seconds=v),
    ),
    ("finalize_lease_seconds", lambda s, v: s.begin_finalize(_ID, lease_seconds=v)),
    (
        "suspect_after_seconds",
        lambda s, v: s.claim_suspects(silent_seconds=v, limit=1, lease_seconds=1),
    ),
    (
        "suspect_lease_seconds",
        lambda s, v: s.claim_suspects(silent_seconds=1, limit=1, lease_seconds=v),
    ),
    (
        "sweep_batch_size",
        lambda s, v: s.close_stale(idle_seconds=1, max_age_seconds=1, limit=v),
    ),
    ("sweep_batch_size", lambda s, v: s.claim_unannounced(limit=v, lease_seconds=1)),
    ("sweep_batch_size", lambda s, v: s.close_orphans(older_than_seconds=1, limit=v)),
]
_ID: UUID = UUID(int=0)
# Other settings a value must agree with (a throttle under the heartbeat interval).
COMPANIONS: dict[str, dict[str, object]] = {
    "heartbeat_throttle_seconds": {
        "heartbeat_interval_seconds": 1000.0,
        "heartbeat_grace_seconds": None,
    },
}


def _range(name: str) -> tuple[float, bool, float]:
    """(low, low inclusive, high) of a setting, read from its declaration."""
    low: float | None = None
    inclusive = True
    high: float | None = None
    for constraint in Settings.model_fields[name].metadata:
        if isinstance(constraint, annotated_types.Ge):
            low, inclusive = float(constraint.ge), True  # type: ignore[arg-type]
        elif isinstance(constraint, annotated_types.Gt):
            low, inclusive = float(constraint.gt), False  # type: ignore[arg-type]
        elif isinstance(constraint, annotated_types.Le):
            high = float(constraint.le)  # type: ignore[arg-type]
    assert low is not None and high is not None, f"{name} declares no range"
    return low, inclusive, high


@pytest.mark.parametrize(("name", "call"), PAIRS, ids=[name for name, _ in PAIRS])
def test_settings_and_sql_agree_on_every_bound(store: PostgresStore, name: str, call: Call) -> None:
    low, inclusive, high = _range(name)
    whole = name == "sweep_batch_size"
    step = 1 if whole else 0.001
    edge_low = low if inclusive else low + step
    for accepted in (edge_low, high):
        value = int(accepted) if whole else accepted
        Settings.model_validate({name: value, **COMPANIONS.get(name, {})})  # settings take it
        call(store, value)  # and so does SQL
    for refused in (edge_low - step, high + step):
        value = int(refused) if whole else refused
        with pytest.raises(ValueError, match=name):
            Settings.model_validate({name: value, **COMPANIONS.get(name, {})})
        with pytest.raises(InvalidInputError):
            call(store, value)
