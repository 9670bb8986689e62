"""A Ctrl-C pressed while the command line loads is never lost."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

INTERRUPTED = "tether: interrupted as it started; nothing was done\n"


def _tether_version(before: str = "", as_it_loads: str = "pass", after: str = "") -> list[str]:
    """This interpreter running `tether --version` through its entry point, with
    ``before`` run first, ``as_it_loads`` as the command line's import begins, and
    ``after`` once the command has run."""
    script = f"""
import builtins, os, signal, sys, time, weakref
from tether.__main__ import main
{before}
real_import = builtins.__import__

def importing(name, *args, **kwargs):
    if name == "tether.cli":
        {as_it_loads}
    return real_import(name, *args, **kwargs)

builtins.__import__ = importing
sys.argv = ["tether", "--version"]
code = main()
{after}
sys.exit(code)
"""
    return [sys.executable, "-c", script]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, a script of the test's
        command, capture_output=True, text=True, timeout=60, check=False
    )


# As the command line starts to load, a module lock's weakref is dropped (as
# importlib's are, all along an import) and its callback is where the Ctrl-C lands.
# Raised there, the KeyboardInterrupt was printed as ignored and dropped, and the
# command ran on: a `tether dev` started anyway.
A_LOCK_DROPPED_UNDER_CTRL_C = """
class ModuleLock:
    pass

def dropped(ref):
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000):  # the handler runs here, inside the callback
        pass

held = [ModuleLock()]
ref = weakref.ref(held[0], dropped)
"""


def test_a_ctrl_c_landing_in_an_import_callback_still_stops_the_command() -> None:
    ran = _run(_tether_version(A_LOCK_DROPPED_UNDER_CTRL_C, as_it_loads="held.clear()"))
    assert ran.returncode == 130, (ran.stdout, ran.stderr)
    assert ran.stdout == ""
    assert ran.stderr == INTERRUPTED


def test_a_ctrl_c_ignored_where_the_command_starts_stays_ignored() -> None:
    """A job started in the background inherits SIGINT ignored: loading the command line
    does not make it heed one."""
    ran = _run(
        _tether_version(
            "signal.signal(signal.SIGINT, signal.SIG_IGN)",
            as_it_loads="assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN",
            after="assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN",
        )
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("tether ")


def test_a_second_ctrl_c_stops_a_load_that_hangs() -> None:
    """The first Ctrl-C waits for the load to end; a second one does not. The load hangs
    (a slow disk, a network file system)."""
    hanging = "sys.stderr.write('loading\\n'); sys.stderr.flush(); time.sleep(60)"
    process = subprocess.Popen(  # noqa: S603 - this interpreter, a script of the test's
        _tether_version(as_it_loads=hanging),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == "loading\n"
        process.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert stderr == INTERRUPTED
