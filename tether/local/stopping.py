"""The local commands' event loop, stopped by SIGTERM as by Ctrl-C.

tether's command line turns SIGTERM into a KeyboardInterrupt raised from a signal
handler (tether.cli). Raised in an event loop, it lands wherever the loop happens to
be: in a callback that wakes a task (the task then waits for ever, and so does the
loop's shutdown), in a weakref callback (where Python ignores it: the command runs
on as if never asked to stop), in a client's task (a traceback). asyncio stops its
main task on Ctrl-C by cancelling it from the loop; SIGTERM is given the same path.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")


def run(main: Coroutine[Any, Any, Result]) -> Result:
    """``asyncio.run(main)``; SIGTERM cancels ``main``, and once the loop has closed,
    KeyboardInterrupt is raised as for a Ctrl-C (the command line reports both alike)."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(main)  # no signal reaches another thread
    terminated = False

    async def cancelled_on_sigterm() -> Result:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()  # asyncio.run runs this coroutine as a task

        def terminate(signum: int, frame: object) -> None:
            nonlocal terminated
            if terminated:
                return  # a second SIGTERM must not cut short the clean-up the first began
            terminated = True
            if task is not None:
                # From the loop, not from here: a signal handler runs wherever the
                # loop was, halfway through its own bookkeeping included.
                loop.call_soon_threadsafe(task.cancel)

        # A Python handler, not the loop's: a server that takes SIGTERM over for its
        # own graceful stop (uvicorn, in tether dev) keeps it to itself meanwhile.
        before = signal.signal(signal.SIGTERM, terminate)
        try:
            return await main
        finally:
            # Once heard, SIGTERM stays ignored, as tether.cli leaves it: the clean-up
            # still to come is not cut short.
            heard = terminated or before is None
            signal.signal(signal.SIGTERM, signal.SIG_IGN if heard else before)

    try:
        result = asyncio.run(cancelled_on_sigterm())
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    if terminated:  # the command caught its cancellation and returned: still stopped
        raise KeyboardInterrupt
    return result
