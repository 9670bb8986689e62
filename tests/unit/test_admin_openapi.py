"""The API's published schema: every error is a problem document, every route but
/health declares its credentials, and the page loads nothing from elsewhere."""

from __future__ import annotations

import re
from importlib import resources

from tether.admin.app import create_app
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
            assert ("404" in responses) is ("{" in path), (method, path)
            for status, response in responses.items():
                if int(status) >= 400 and path != "/health":
                    assert list(response["content"]) == ["application/problem+json"], status
            if path == "/health":
                assert "security" not in operation
            else:
                assert {"OperatorBearer", "OperatorKey"} <= {
                    name for scheme in operation["security"] for name in scheme
                }
                assert {"401", "403"} <= set(responses)


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
