"""Deployment tooling: the Lambda bundle (``bundle``) and the CloudFormation stack
(``stack``) behind ``tether deploy`` and ``tether destroy``. Never part of a bundle.

The template ships here as package data (``template.yaml``, the one source being
``infra/template.yaml`` of the repository), and so do the Lambda entry points
(``functions/``, the one source being the repository's ``functions/``), so an installed
``tether deploy`` finds both.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TEMPLATE_NAME = "template.yaml"


def entry_points() -> Path:
    """The folder of the Lambda entry points this version of tether deploys (the bundle's
    ``functions/``), unless ``--functions`` names another."""
    return Path(__file__).resolve().parent / "functions"


def template_text() -> str:
    """The CloudFormation template this version of tether deploys."""
    return (resources.files(__name__) / TEMPLATE_NAME).read_text(encoding="utf-8")
