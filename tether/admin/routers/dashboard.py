"""The live page: a server-rendered shell, its script and style (served from the
package, nothing from elsewhere), and the chart drawn here as SVG. The shell holds no
data, so it needs no credentials; everything it shows comes from the API, with the
operator key the page keeps in the tab's sessionStorage."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tether import __version__
from tether.admin import operations
from tether.admin.chart import daily_chart
from tether.admin.deps import OPERATOR_ROUTES, StoreDep
from tether.admin.queries import IN_DIGITS

router = APIRouter(include_in_schema=False)

# The page runs its own script and style only, and talks to this origin only.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@cache
def _template() -> Template:
    text = (resources.files("tether.admin") / "templates" / "dashboard.html").read_text()
    return Template(text)


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/")
def index(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{_base(request)}/dashboard", status_code=307)


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    page = _template().substitute(base=html.escape(_base(request)), version=__version__)
    # The rest of what it sends, every answer sends (tether.admin.headers).
    return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})


# Data, as the API's routes are: an operator, and no query parameter it does not take.
@router.get("/dashboard/chart.svg", dependencies=OPERATOR_ROUTES)
def chart(
    store: StoreDep,
    days: Annotated[int, Query(ge=1, le=366), IN_DIGITS] = 14,
) -> Response:
    report = operations.daily(store, days)
    return Response(daily_chart(report.stats), media_type="image/svg+xml")
