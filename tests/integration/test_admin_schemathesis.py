"""schemathesis against the app's own OpenAPI schema, on a real Postgres: for every
operation, generated requests (valid ones, and invalid ones) with an operator key get
no 5xx, and every response matches what the schema documents (status, content type,
body). Bounded: a few dozen examples per operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.admin_support import AUTH, AdminApi, admin_api
from tests.conftest import SessionFactory

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 25, schemathesis.GenerationMode.NEGATIVE: 15}


@pytest.fixture
def api(database_url: str, make_session: SessionFactory) -> Iterator[AdminApi]:
    # Something to list, page through, close and count.
    for seconds in (10, 20, 30, 4 * 3600):
        make_session(started_seconds_ago=seconds)
    make_session(started_seconds_ago=600, ended_seconds_ago=300, end_reason="gone")
    with admin_api(database_url) as running:
        yield running


def _exercise(operation: Any, mode: schemathesis.GenerationMode, examples: int) -> None:
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=AUTH, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # No invalid request exists for an operation without parameters (/health).
        assert mode.is_negative


@pytest.mark.timeout(300)
def test_every_operation_keeps_to_its_schema(api: AdminApi) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            _exercise(operation, mode, examples)
