"""Deployment tooling: the Lambda bundle (``bundle``) and the CloudFormation stack
(``stack``) behind ``tether deploy`` and ``tether destroy``. Never part of a bundle.

The template ships here as package data (``template.yaml``, the one source being
``infra/template.yaml`` of the repository), so an installed ``tether deploy`` finds it.
"""

from __future__ import annotations

from importlib import resources

TEMPLATE_NAME = "template.yaml"


def template_text() -> str:
    """The CloudFormation template this version of tether deploys."""
    return (resources.files(__name__) / TEMPLATE_NAME).read_text(encoding="utf-8")
