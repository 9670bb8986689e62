"""The live page's files ship in the wheel, beside the app that serves them."""

from __future__ import annotations

import zipfile
from pathlib import Path


def test_the_page_and_its_assets_are_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "tether/admin/app.py",
        "tether/admin/routers/sessions.py",
        "tether/admin/templates/dashboard.html",
        "tether/admin/static/dashboard.js",
        "tether/admin/static/dashboard.css",
    } <= names
