"""``end_processes``: the one way tests and ``make stop`` end processes by PID."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from sparc_ray.serving.fastpath import end_processes

# Says "ready", then "TERM" when SIGTERM arrives (and exits), or ignores SIGTERM.
CHILD = """
import signal, sys, time
def on_term(*_):
    print("TERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "ignore" else on_term)
print("ready", flush=True)
time.sleep(60)
"""


def started(on_term: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, on_term], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def rest(proc: subprocess.Popen) -> bytes:
    assert not psutil.pid_exists(proc.pid), proc.pid  # gone, and reaped
    assert proc.stdout is not None
    return proc.stdout.read()


def test_sigterm_first_then_sigkill_after_the_grace():
    polite, stubborn = started("exit"), started("ignore")
    began = time.monotonic()
    end_processes([polite.pid, stubborn.pid], grace_s=1)
    assert time.monotonic() - began >= 1  # the stubborn one had its grace
    assert rest(polite) == b"TERM\n"
    assert rest(stubborn) == b""


def test_no_grace_is_sigkill_at_once_and_gone_pids_are_skipped():
    proc, gone = started("exit"), started("exit")
    gone.kill()
    gone.wait(5)
    began = time.monotonic()
    end_processes([proc.pid, gone.pid], grace_s=0)
    assert time.monotonic() - began < 1
    assert rest(proc) == b""  # never saw SIGTERM
