"""The test harness itself: wait_until (tests/waiting.py), and the guard that keeps Ray out of
tests not marked `cluster` (tests/conftest.py, tests/ray_guard/sitecustomize.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ray_guard.sitecustomize import RayInUnmarkedTest
from tests.waiting import wait_until

BIN = Path(sys.executable).parent


def test_wait_until_returns_the_first_truthy_value():
    values = iter([0, None, "", "ready", "later"])
    assert wait_until(lambda: next(values), 5, interval=0.01, message="ready") == "ready"


def test_wait_until_names_what_it_waited_for_and_the_last_value():
    calls = []
    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        wait_until(lambda: calls.append(1) or len(calls) * 0, 0.3, 0.05, "the queue to fill")
    assert 0.3 <= time.monotonic() - started < 2 and len(calls) >= 3
    assert "waiting for the queue to fill" in str(info.value)
    assert "last value seen: 0" in str(info.value)
    with pytest.raises(AssertionError, match="now: 7"):
        wait_until(lambda: False, 0.05, 0.01, message=lambda: "x; now: 7")


def test_wait_until_ignores_only_the_named_exceptions():
    attempts = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not up yet")
        return True

    assert wait_until(flaky, 5, 0.01, "up", ignore=(ConnectionError,)) is True
    with pytest.raises(AssertionError, match="ConnectionError"):
        wait_until(lambda: flaky() and attempts.clear(), 0.05, 0.01, "up", ignore=(OSError,))
    with pytest.raises(KeyError):
        wait_until(lambda: {}["x"], 5, 0.01, "x", ignore=(ConnectionError,))


def test_a_test_not_marked_cluster_cannot_start_ray_in_process():
    import ray

    try:
        with pytest.raises(RayInUnmarkedTest, match=r"mark it `cluster` \(tests/test_harness"):
            ray.init(num_cpus=1, include_dashboard=False)
    finally:
        if ray.is_initialized():  # only if the guard failed
            ray.shutdown()


def test_nor_in_the_python_processes_it_starts():
    init = subprocess.run(
        [sys.executable, "-c", "import ray; ray.init(num_cpus=1, include_dashboard=False)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode != 0 and "this test starts Ray: mark it `cluster`" in init.stderr
    # `ray start --help` would start nothing even if the guard failed
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--help"], capture_output=True, text=True, timeout=120
    )
    assert start.returncode == 3 and "mark it `cluster`" in start.stderr, start.stdout[-500:]
    status = subprocess.run(
        [str(BIN / "ray"), "--version"], capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr  # the rest of the CLI works
