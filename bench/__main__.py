"""``make bench``: every benchmark, one after the other; results in bench/results/."""

from __future__ import annotations

from bench import cold_start


def main() -> None:
    cold_start.main()


if __name__ == "__main__":
    main()
