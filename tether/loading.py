"""Load a callable named in configuration as ``package.module:function``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tether.dburl import hide_secrets
from tether.errors import ConfigurationError


def load_callable(
    reference: str, *, what: str, default_attribute: str | None = None
) -> Callable[..., Any]:
    """The callable ``reference`` names; a ConfigurationError naming ``what`` if it cannot be."""
    module_name, _, attribute = reference.partition(":")
    attribute = attribute or default_attribute or ""
    if not module_name or not attribute:
        raise ConfigurationError(
            f"{what} must look like 'package.module:function', got {reference!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot load {what} {reference!r}: cannot import {module_name!r}:"
            f" {hide_secrets(str(exc))}"
        ) from exc
    except (Exception, SystemExit) as exc:
        # The module itself failed as it ran (a syntax error, a setting it reads at
        # import, a sys.exit of a script's): named in one line, as any other reference
        # that cannot be loaded.
        raise ConfigurationError(
            f"cannot load {what} {reference!r}: importing {module_name!r} raised"
            f" {type(exc).__name__}: {hide_secrets(str(exc))}"
        ) from exc
    target = getattr(module, attribute, None)
    if not callable(target):
        raise ConfigurationError(
            f"cannot load {what} {reference!r}: {attribute!r} is not a callable"
        )
    return target  # type: ignore[no-any-return]
