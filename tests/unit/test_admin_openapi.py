"""The API's published schema: every error is a problem document, every route declares
its credentials (optional on /health alone), and the page loads nothing from elsewhere."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.admin.app import create_app
from tether.durations import DURATION_PATTERN, parse_duration
from tether.errors import InvalidInputError
from tether.sweep import SweepReport


def test_every_error_response_is_a_problem_document() -> None:
    schema = create_app().openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert "500" in responses
            assert ("400" in responses) is (path != "/health")
            # A user unknown to the table is answered (offline, nothing closed).
            assert ("404" in responses) is ("{session_id}" in path), (method, path)
            for status, response in responses.items():
                if int(status) >= 400 and (path, status) != ("/health", "503"):
                    assert list(response["content"]) == ["application/problem+json"], status
            assert {"OperatorBearer", "OperatorKey"} <= {
                name for scheme in operation["security"] for name in scheme
            }
            assert {"401", "403"} <= set(responses)
            # Only /health answers a caller without credentials (the empty requirement).
            assert ({} in operation["security"]) is (path == "/health"), path


def test_health_publishes_its_short_answer_and_its_full_one() -> None:
    """Anyone gets the status alone, an operator the details: the schema names both
    shapes, the short one with no other key, for 200 and 503 alike."""
    schema = create_app().openapi()
    operation = schema["paths"]["/health"]["get"]
    components = schema["components"]["schemas"]
    for status in ("200", "503"):
        shapes = operation["responses"][status]["content"]["application/json"]["schema"]
        assert {one["$ref"].rsplit("/", 1)[1] for one in shapes["anyOf"]} == {
            "Health",
            "HealthSummary",
        }
    short = components["HealthSummary"]
    assert (set(short["properties"]), short["additionalProperties"]) == (
        {"status", "database"},
        False,
    )
    assert {"migrations", "sweep", "problems"} <= set(components["Health"]["properties"])
    # A problem document too, when the answer cannot be made (signing keys unreachable).
    assert "application/problem+json" in operation["responses"]["503"]["content"]


def test_the_page_and_its_assets_reference_nothing_outside_the_app() -> None:
    files = resources.files("tether.admin")
    for part in ("templates/dashboard.html", "static/dashboard.js", "static/dashboard.css"):
        text = (files / part).read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), part
        assert "cdn" not in text.lower(), part


def test_the_sweep_summary_describes_every_field_of_the_report() -> None:
    summary = create_app().openapi()["components"]["schemas"]["SweepSummary"]["properties"]
    assert set(summary) == set(SweepReport().as_dict())
    undescribed = [name for name, field in summary.items() if not field.get("description")]
    assert undescribed == []


def _parameter(path: str, name: str) -> dict[str, Any]:
    operation = create_app().openapi()["paths"][path]["get"]
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_an_age_is_described_as_the_command_line_takes_it() -> None:
    """The schema said only "a string of at most 32 characters": a client (or an
    operator reading it) could not tell that 2h, 90m and 7200 are all read, nor the
    bounds, and schemathesis generated no valid age to try."""
    older_than = _parameter("/stats/orphans", "older_than")
    schema = older_than["schema"]
    assert schema["pattern"] == DURATION_PATTERN
    for example in ("2h", "90m", "1d12h", "7200"):
        assert re.fullmatch(DURATION_PATTERN, example), example
    assert {"2h", "90m", "7200"} <= set(schema["examples"])
    assert "more than 0 and at most 366 days" in older_than["description"]


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.from_regex(DURATION_PATTERN).filter(lambda text: len(text) <= 32),
        st.text(alphabet="0123456789.dhmsDHMS \t-+_x", max_size=12),
        st.text(max_size=12),
    )
)
def test_the_pattern_published_is_what_the_parser_reads(text: str) -> None:
    """What the pattern matches, and only that, parses (bounds apart): a client that
    checks an age against the schema is never refused for its form, and schemathesis's
    "invalid" ages are refused."""
    try:
        parse_duration(text, zero_allowed=True)
    except InvalidInputError:
        readable = False
    else:
        readable = True
    assert readable is (re.fullmatch(DURATION_PATTERN, text) is not None), repr(text)
