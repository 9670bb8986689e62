"""The ``tether`` command's entry point (``python -m tether`` too).

It loads the command line (a moment: its imports) where a Ctrl-C is caught: one
pressed then ends the command quietly, as one pressed later does, not with a
traceback of whichever import it interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Ctrl-C noted while the command line loads, and acted on once it has: raised inside
    a callback the import machinery runs (a module lock's weakref, say), the
    KeyboardInterrupt is printed as ignored and dropped, and the command ran on as if no
    key had been pressed."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        # Ignored (a job started in the background) or another's: left as it is.
        yield
        return
    pressed: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        if pressed:
            # Pressed again: an import that hangs (a slow disk) is stopped where it is.
            raise KeyboardInterrupt
        pressed.append(signum)

    try:
        signal.signal(signal.SIGINT, note)
    except ValueError:  # not the main thread: no signal reaches it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt


def main() -> int:
    try:
        with _ctrl_c_held():
            from tether.cli import main as command_line  # noqa: PLC0415 - caught as it loads

        return command_line()
    except KeyboardInterrupt:
        # The command had not begun (it reports its own interruptions): nothing was done.
        sys.stderr.write("tether: interrupted as it started; nothing was done\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
