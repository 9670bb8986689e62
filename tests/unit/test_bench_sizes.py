"""The sizes a full benchmark run takes from the environment, read before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import SIZES, SizeError, check_sizes, size


@pytest.mark.parametrize("variable", sorted(SIZES))
@pytest.mark.parametrize(
    "text",
    [
        "abc",  # int() at import: a ValueError traceback once the benchmark's turn came
        "5e6",
        "-5",  # an empty history, then a ratio of two sweeps over nothing
        "0",
        "1000000000000",  # hours of filling, or a full disk
    ],
)
def test_a_size_it_cannot_use_is_refused_by_name(
    variable: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(SizeError, match=rf"^{variable}='{text}' is not a size") as refused:
        check_sizes()
    bounds = SIZES[variable]
    assert f"from {bounds.minimum:,} to {bounds.maximum:,}" in str(refused.value)


def test_sizes_within_bounds_are_taken_and_unset_ones_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_BENCH_HISTORY", "2_000_000")
    monkeypatch.setenv("TETHER_BENCH_CONNECTIONS", " 500 ")
    monkeypatch.delenv("TETHER_BENCH_ADOPT_ROWS", raising=False)
    check_sizes()
    assert size("TETHER_BENCH_HISTORY") == 2_000_000
    assert size("TETHER_BENCH_CONNECTIONS") == 500
    assert size("TETHER_BENCH_ADOPT_ROWS") == 1_000_000


def test_the_bench_readme_gives_each_size_with_its_bounds() -> None:
    readme = (Path(__file__).resolve().parents[2] / "bench" / "README.md").read_text()
    for bounds in SIZES.values():
        row = (
            f"| `{bounds.variable}` |",
            f"| {bounds.default:,} | {bounds.minimum:,} - {bounds.maximum:,} |",
        )
        assert all(part in readme for part in row), bounds.variable
