"""Head-node fault tolerance on a real cluster: the GCS keeps its state in a real
`redis-server` (as `gcsFaultToleranceOptions` sets up on KubeRay), is SIGKILLed while clients
send requests at c=8, and is started again as the head pod's restart would. Serve's data path
(proxy -> replicas) does not go through the GCS, so requests keep being answered, and the
restarted GCS finds the cluster, the Serve controller and the app in Redis."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from sparc_ray.data.loading import load_dataset
from sparc_ray.registry import signing
from tests.integration.cluster import BIN, free_port, running_cluster
from tests.integration.test_scoring import publish
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed"),
]
ROWS: list[dict] = []  # one row of the bundled dataset, set by the test


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """A password-protected redis-server on a free port; stopped by PID."""
    port, password = free_port(), secrets.token_hex(16)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", password]
    proc = subprocess.Popen(
        ["redis-server", *args, "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def accepts() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(accepts, 20, interval=0.1, message=f"redis-server on {port}", ignore=(OSError,))
        yield f"127.0.0.1:{port}", password
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def gcs_process(port: int) -> psutil.Process:
    """This cluster's GCS: the gcs_server serving ``port``."""
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "gcs_server" and f"--gcs_server_port={port}" in (
            p.info["cmdline"] or []
        ):
            return p
    raise LookupError(f"no gcs_server on port {port}")


def load(url: str, stop: threading.Event, outcomes: list) -> None:
    """One client: /predict in a loop, recording (time, status or error)."""
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            try:
                status = client.post(f"{url}/predict", json={"instances": ROWS}).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            outcomes.append((time.time(), status))


def test_serve_answers_through_a_gcs_crash_and_the_restarted_gcs_recovers(tmp_path):
    restarted: list[subprocess.Popen] = []
    try:
        with redis_server(tmp_path) as redis, running_cluster(tmp_path, redis) as cluster:
            check_gcs_crash(cluster, tmp_path, restarted)
    finally:  # the cluster's stop ends the restarted GCS too; make sure of it by PID
        for proc in restarted:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            if proc.poll() is None:
                proc.kill()


def check_gcs_crash(cluster, tmp_path: Path, restarted: list) -> None:
    frame, target = load_dataset("builtin:breast_cancer")
    key = signing.load_private_key(str(cluster.signing_key))
    publish(
        cluster.workdir / "model_store", "breast_cancer", frame, target, "logistic_regression", key
    )
    cluster.deploy(cluster.serve_config())
    ROWS[:] = frame.drop(columns=target).head(1).to_dict(orient="records")
    assert httpx.post(f"{cluster.url}/predict", json={"instances": ROWS}).status_code == 200

    stop, outcomes = threading.Event(), []
    clients = [threading.Thread(target=load, args=(cluster.url, stop, outcomes)) for _ in range(8)]
    for c in clients:
        c.start()
    try:
        wait_until(
            lambda: sum(status == 200 for _, status in outcomes) >= 100,
            60,
            message="100 answers at c=8 before the GCS is killed",
        )
        gcs = gcs_process(cluster.port)
        cmdline, env, cwd = gcs.cmdline(), gcs.environ(), gcs.cwd()
        killed_at = time.time()
        os.kill(gcs.pid, signal.SIGKILL)
        gcs.wait(timeout=10)
        # The outage under test: the GCS stays down 10 s, as during a head pod's restart,
        # while the clients keep sending (a scenario's duration, not a wait for a state).
        time.sleep(10)
        with open(tmp_path / "gcs_server.restarted.out", "wb") as log:
            restarted.append(
                subprocess.Popen(cmdline, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            )
        time.sleep(max(0.0, killed_at + 60 - time.time()))  # the 60 s measured under load
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=30)
    after = [status for t, status in outcomes if t >= killed_at]
    ok = sum(1 for status in after if status == 200)
    failures = sorted({str(s) for s in after if s != 200})
    print(f"GCS killed under c=8: {ok}/{len(after)} requests answered 200 in the next 60 s")
    assert len(after) > 500, len(after)
    assert ok / len(after) >= 0.99, (ok, len(after), failures)
    # The restarted GCS loaded the cluster from Redis: the node and the Serve app are back.
    status = cluster.serve_status()
    assert yaml.safe_load(status)["applications"]["sparc"]["status"] == "RUNNING", status
    assert "Active:" in cluster.run(str(BIN / "ray"), "status").stdout
    r = httpx.post(f"{cluster.url}/predict", json={"instances": ROWS}, timeout=10)
    assert r.status_code == 200
