"""The ``tether`` command's entry point (``python -m tether`` too).

It loads the command line (a moment: its imports) where a Ctrl-C is caught: one
pressed then ends the command quietly, as one pressed later does, not with a
traceback of whichever import it interrupted.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from tether.cli import main as command_line  # noqa: PLC0415 - caught as it loads

        return command_line()
    except KeyboardInterrupt:
        # The command had not begun (it reports its own interruptions): nothing was done.
        sys.stderr.write("tether: interrupted as it started; nothing was done\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
