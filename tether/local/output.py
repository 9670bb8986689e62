"""Whole lines on stdout when many threads write at once.

``print`` writes a line and its newline in two calls, and Powertools' metrics print
their EMF lines that way; with invocations running in several threads (the local
runtime) lines from different threads would be glued together. This stream keeps
each thread's text until its newline and writes whole lines under one lock.
"""

from __future__ import annotations

import threading
from typing import TextIO


class LineAtomicStream:
    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._pending = threading.local()

    def write(self, text: str) -> int:
        buffered: str = getattr(self._pending, "text", "") + text
        head, newline, tail = buffered.rpartition("\n")
        self._pending.text = tail
        if newline:
            with self._lock:
                self._target.write(head + newline)
                self._target.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    @property
    def encoding(self) -> str:
        return self._target.encoding
