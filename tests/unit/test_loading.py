"""A callable named in configuration (TETHER_FINALIZER, a dev route) that cannot be loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.errors import ConfigurationError
from tether.loading import load_callable

PASSWORD = "Pr1vateMemPass"


@pytest.mark.parametrize(
    "source",
    [
        f"raise ImportError('memory store at postgresql://mem:{PASSWORD}@db.example.com/mem')\n",
        f"raise RuntimeError('memory store at postgresql://mem:{PASSWORD}@db.example.com/mem')\n",
    ],
    ids=["import-error", "other-error"],
)
def test_a_module_failing_as_it_imports_is_named_without_the_secrets_it_quotes(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ImportError's message was quoted as it was: a module that says which URL it
    could not reach put its password in the error every SessionEnded invocation raised."""
    name = f"finalizer_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError) as raised:
        load_callable(f"{name}:finalize", what="TETHER_FINALIZER")
    said = str(raised.value)
    assert said.startswith(f"cannot load TETHER_FINALIZER '{name}:finalize'")
    assert "db.example.com" in said
    assert PASSWORD not in said
