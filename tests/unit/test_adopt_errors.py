"""Which failed adoption steps are said to pass if run again."""

from __future__ import annotations


def test_an_adoption_step_is_said_to_pass_again_only_where_another_run_may() -> None:
    """A statement the server's statement_timeout cut, or no connection slot free, may
    pass on another run, as a lost connection may; a refusal that repeats does not."""
    from psycopg import errors  # noqa: PLC0415

    from tether.adopt.catalog import may_pass_again  # noqa: PLC0415

    for transient in (
        errors.QueryCanceled,
        errors.TooManyConnections,
        errors.AdminShutdown,
        errors.DeadlockDetected,
        errors.SerializationFailure,
    ):
        assert may_pass_again(transient()), transient
    for lasting in (errors.RaiseException, errors.DependentObjectsStillExist):
        assert not may_pass_again(lasting()), lasting
