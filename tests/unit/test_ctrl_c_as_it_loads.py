"""A Ctrl-C pressed while the command line loads is never lost."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

# `tether --version`, with one thing added: as the command line starts to load, a
# module lock's weakref is dropped (as importlib's are, all along an import) and its
# callback is where the Ctrl-C lands. Raised there, the KeyboardInterrupt was printed
# as ignored and dropped, and the command ran on: a `tether dev` started anyway.
CTRL_C_IN_AN_IMPORT_CALLBACK = """
import builtins, os, signal, sys, weakref
from tether.__main__ import main

class ModuleLock:
    pass

def dropped(ref):
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000):  # the handler runs here, inside the callback
        pass

held = [ModuleLock()]
ref = weakref.ref(held[0], dropped)
real_import = builtins.__import__

def importing(name, *args, **kwargs):
    if name == "tether.cli" and held:
        held.clear()
    return real_import(name, *args, **kwargs)

builtins.__import__ = importing
sys.argv = ["tether", "--version"]
sys.exit(main())
"""


def test_a_ctrl_c_landing_in_an_import_callback_still_stops_the_command() -> None:
    ran = subprocess.run(  # noqa: S603 - this interpreter, a script of the test's
        [sys.executable, "-c", CTRL_C_IN_AN_IMPORT_CALLBACK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 130, (ran.stdout, ran.stderr)
    assert ran.stdout == ""
    assert ran.stderr == "tether: interrupted as it started; nothing was done\n"


def test_a_ctrl_c_ignored_where_the_command_starts_stays_ignored() -> None:
    """A job started in the background inherits SIGINT ignored: loading the command line
    does not make it heed one."""
    ran = subprocess.run(
        [
            sys.executable,
            "-c",
            "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"
            " from tether.__main__ import main; sys.argv = ['tether', '--version'];"
            " code = main(); assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN;"
            " sys.exit(code)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("tether ")


# The command line's import hangs (a slow disk, a network file system).
HANGING_IMPORT = """
import builtins, sys, time
from tether.__main__ import main

real_import = builtins.__import__

def importing(name, *args, **kwargs):
    if name == "tether.cli":
        sys.stderr.write("loading\\n")
        sys.stderr.flush()
        time.sleep(60)
    return real_import(name, *args, **kwargs)

builtins.__import__ = importing
sys.argv = ["tether", "--version"]
sys.exit(main())
"""


def test_a_second_ctrl_c_stops_a_load_that_hangs() -> None:
    """The first Ctrl-C waits for the load to end; a second one does not."""
    process = subprocess.Popen(  # noqa: S603 - this interpreter, a script of the test's
        [sys.executable, "-c", HANGING_IMPORT],
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
    assert stderr == "tether: interrupted as it started; nothing was done\n"
