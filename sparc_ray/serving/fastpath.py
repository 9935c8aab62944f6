"""Ray Serve's fast path: the environment in ``serve.env`` and HAProxy teardown.

Ray starts HAProxy as a child of the Serve proxy actor; a process that outlives
``ray stop --force`` keeps the port. ``stop_haproxy`` finds our HAProxy processes by PID (the
admin socket's ``show info``, and processes running a config file under Ray's HAProxy
directory) and ends them with ``end_processes`` (SIGTERM, a grace period, SIGKILL: the one
way processes are ended by PID, tests included); ``python -m sparc_ray.serving.fastpath stop``
does it from a shell.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

import psutil

# Ray's own default location; only read here, to find HAProxy processes to stop.
RAY_HAPROXY_DIR = "/tmp/haproxy-serve"  # nosec B108
HAPROXY_DIR = Path(os.environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", RAY_HAPROXY_DIR))


def read_env(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped)."""
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def _socket_pid(sock_path: Path) -> int | None:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(sock_path))
        s.sendall(b"show info\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
    return None


def haproxy_pids(base: Path = HAPROXY_DIR) -> set[int]:
    """PIDs of HAProxy processes serving a config under ``base``."""
    pids = {pid for sock in base.glob("*/admin.sock") if (pid := _socket_pid(sock))}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
            if Path(argv[0].decode()).name == "haproxy" and any(
                a.decode(errors="replace").startswith(f"{base}/") for a in argv
            ):
                pids.add(int(proc.name))
    return pids


def end_processes(pids: Iterable[int], grace_s: float) -> None:
    """SIGTERM ``pids``, SIGKILL those still alive after ``grace_s`` seconds (at once when
    it is 0), and wait until they are gone."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    alive = procs
    if grace_s > 0:
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=30)


def stop_haproxy(base: Path = HAPROXY_DIR, grace_s: float = 10.0) -> set[int]:
    """End every HAProxy process of ours (``end_processes``); returns the PIDs it ended."""
    pids = haproxy_pids(base)
    end_processes(pids, grace_s)
    return pids


if __name__ == "__main__":
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m sparc_ray.serving.fastpath stop")
    ended = stop_haproxy()
    print(f"stopped HAProxy processes: {sorted(ended) or 'none'}")
