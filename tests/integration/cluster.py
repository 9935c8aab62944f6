"""A real local Ray cluster (`ray start --head`) with the Serve app deployed from
serve_config.yaml (`serve deploy`), for the integration tests and the benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import yaml

from sparc_ray.registry import signing
from sparc_ray.registry.releases import current_release
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.serving.fastpath import end_processes, read_env, stop_haproxy
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "test-release-control-token-0123456789"  # >= 32 characters, as required
FEEDBACK_TOKEN = "test-feedback-token-0123456789abcdef"
# SIGTERM to SIGKILL at teardown: the GCS and a dashboard process can take 30 s to exit on
# SIGTERM; what a test left is not needed after it, and Ray's files go with the temp dir.
TEARDOWN_GRACE_S = 5


# Where Ray Serve puts HAProxy's files (env var suffix, file name under the cluster's dir).
HAPROXY_FILES = [
    ("CONFIG_FILE_LOC", "haproxy.cfg"),
    ("SOCKET_PATH", "admin.sock"),
    ("SERVER_STATE_BASE", ""),
    ("SERVER_STATE_FILE", "server-state"),
    ("METRICS_SOCKET_PATH", "metrics.sock"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unused_ports(n: int) -> list[int]:
    """``n`` ports free now, from 20000-29999: above Ray's worker ports (10002-19999), below
    Serve's replica ports (30000-31000, retried when taken) and the kernel's ephemeral range
    (32768-), from which Ray's own port-0 binds pick."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(20000, 30000)  # nosec B311 (not security)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("0.0.0.0", port))  # nosec B104 (a probe, closed at once)
            if port not in ports:
                ports.append(port)
    return ports


class Cluster:
    def __init__(self, workdir: Path, redis: tuple[str, str] | None = None) -> None:
        """``redis``: (address, password) of the Redis that keeps the GCS's state (head-node
        fault tolerance); without it the GCS keeps its state in memory."""
        self.workdir, self.redis = workdir, redis
        # Ports of its own, none of Ray's fixed defaults: a developer's own cluster on this
        # machine (6379, 8265, 8000, ...) keeps running beside the tests.
        (
            self.port, self.dashboard, self.metrics, self.serve_port, self.agent_port,
            self.client_port, self.fallback_http, self.fallback_grpc, self.haproxy_stats,
            self.haproxy_metrics, self.autoscaler_metrics, self.dashboard_metrics,
        ) = unused_ports(12)  # fmt: skip
        # Short (Ray's socket paths) and unique: what stop() ends is found by it.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="sparc-", dir="/tmp"))  # nosec B108
        self.haproxy_dir = self.temp_dir / "haproxy"
        self.session: int | None = None  # session id of `ray start` and all it started
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "SPARC_ADMIN_TOKEN": ADMIN_TOKEN,
            "SPARC_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
            "RAY_ADDRESS": f"127.0.0.1:{self.port}",
            # Ray 2.60 token authentication: `ray start`, the CLI and drivers read
            # ~/.ray/auth_token, which start() creates when it is missing.
            "RAY_AUTH_MODE": "token",
            # Serve's fast path (HAProxy ingress, throughput-optimized replicas), as deployed.
            **read_env(ROOT / "serve.env"),
            # A proxy being shut down stays draining for 30 s so that load balancers notice;
            # nothing balances load here, and teardown (`serve shutdown`) would wait for it.
            "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            # HAProxy's files (and so its processes, found by them) in this cluster's dir.
            **{f"RAY_SERVE_HAPROXY_{k}": str(self.haproxy_dir / f) for k, f in HAPROXY_FILES},
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(self.fallback_http),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(self.fallback_grpc),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(self.haproxy_stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(self.haproxy_metrics),
            "AUTOSCALER_METRIC_PORT": str(self.autoscaler_metrics),
            "DASHBOARD_METRIC_PORT": str(self.dashboard_metrics),
        }
        if redis is not None:
            self.env["RAY_REDIS_ADDRESS"] = redis[0]
        self.url = f"http://127.0.0.1:{self.serve_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard}"
        # The key pair training signs with and the app verifies with (as `make demo` makes).
        self.signing_key = workdir / "keys/model_signing.key"
        self.public_key = workdir / "keys/model_signing.pub"
        if not self.signing_key.exists():
            signing.generate_key_pair(workdir / "keys/model_signing")

    def run(self, *cmd: str, timeout: float = 300, check: bool = True):
        r = subprocess.run(
            cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            )
        return r

    def start(self) -> None:
        self.run(str(BIN / "ray"), "get-auth-token", "--generate")  # creates one if missing
        cmd = [
            str(BIN / "ray"), "start", "--head", "--num-cpus=2", "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}", f"--port={self.port}", "--include-dashboard=true",
            f"--dashboard-port={self.dashboard}", f"--metrics-export-port={self.metrics}",
            f"--dashboard-agent-listen-port={self.agent_port}",
            f"--ray-client-server-port={self.client_port}",
            *(["--redis-password", self.redis[1]] if self.redis else []),
        ]  # fmt: skip
        # A session of its own: every process Ray starts inherits it (Ray does not setsid).
        # Output to a file: the daemons it starts could hold a pipe open.
        log = self.temp_dir / "ray-start.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=self.env, start_new_session=True,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.session = proc.pid
        if proc.wait(timeout=300) != 0:
            raise RuntimeError(f"ray start failed ({proc.returncode}):\n{log.read_text()[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes: those in the session of its `ray start` or naming its
        temp dir (e.g. a GCS a test restarted), and all their descendants."""
        roots = []
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(p.pid) == self.session or any(
                    str(self.temp_dir) in arg for arg in p.info["cmdline"] or []
                ):
                    roots.append(p)
        found = {p.pid: p for p in roots}
        for p in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({c.pid: c for c in p.children(recursive=True)})
        found.pop(os.getpid(), None)
        return list(found.values())

    def stop(self) -> None:
        """Serve, then every process of this cluster by PID, its HAProxy, and its temp dir;
        no global `ray stop`."""
        self.run(
            str(BIN / "serve"), "shutdown", "-y", "-a", self.dashboard_url, check=False, timeout=120
        )
        if self.session is not None:
            end_processes([p.pid for p in self.processes()], TEARDOWN_GRACE_S)
        stop_haproxy(self.haproxy_dir)  # HAProxy can outlive Ray: end it by PID
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def train(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The training job as a driver on this cluster (RAY_ADDRESS points at it), signing
        what it publishes."""
        job, key = str(ROOT / "jobs/train.py"), str(self.signing_key)
        return self.run(sys.executable, job, *args, "--signing-key", key, timeout=600, check=check)

    def serve_config(self, **deployment_overrides) -> Path:
        """serve_config.yaml pointed at this cluster's store and port, with overrides per
        deployment (e.g. ``Model={"user_config": {...}}``) merged in."""
        cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        cfg["http_options"]["port"] = self.serve_port
        app = cfg["applications"][0]
        app["args"]["model_store"] = str(self.workdir / "model_store")
        app["args"]["public_key"] = str(self.public_key)
        for dep in app["deployments"]:
            for key, value in deployment_overrides.get(dep["name"], {}).items():
                dep[key] = {**dep.get(key, {}), **value} if isinstance(value, dict) else value
        path = self.workdir / "serve_config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def actor_pids(self, pattern: str) -> list[int]:
        """PIDs of the live Ray actors whose class name matches ``pattern`` (state API)."""
        script = (
            "import json; from ray.util.state import list_actors; "
            "print(json.dumps([(a.class_name, a.pid) for a in "
            "list_actors(filters=[('state', '=', 'ALIVE')], limit=1000)]))"
        )
        out = self.run(sys.executable, "-c", script).stdout.strip().splitlines()[-1]
        return [pid for cls, pid in json.loads(out) if re.search(pattern, cls)]

    def serve_status(self) -> str:
        """`serve status` of this cluster, as printed."""
        return self.run(str(BIN / "serve"), "status", "-a", self.dashboard_url, check=False).stdout

    def running_replicas(self, deployment: str, app: str = "sparc") -> int:
        status = yaml.safe_load(self.serve_status())["applications"][app]["deployments"]
        return status[deployment]["replica_states"].get("RUNNING", 0)

    def scaling_events(self) -> list[str]:
        """The Serve controller's autoscaling decisions so far ("Upscaling ... Current ongoing
        requests: ..."), oldest first."""
        logs = sorted((self.temp_dir / "session_latest/logs/serve").glob("controller_*.log"))
        events = []
        for path in logs:
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    message = json.loads(line).get("message", "") if line[:1] == "{" else line
                    if re.search(r"(Up|Down)scaling Deployment", message):
                        events.append(message)
        return events

    def deploy(self, config: Path, timeout: float = 180, healthy: tuple[int, ...] = (200,)) -> None:
        """`serve deploy`, then wait until GET /health answers with one of ``healthy``."""
        self.run(str(BIN / "serve"), "deploy", str(config), "-a", self.dashboard_url)

        def answers_healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code in healthy:
                    return True
            status = self.serve_status()
            if "DEPLOY_FAILED" in status:
                raise RuntimeError(f"serve deploy failed:\n{status}")
            return False

        wait_until(
            answers_healthy,
            timeout,
            interval=1,
            message=lambda: (
                f"GET /health answering {healthy} after `serve deploy`; serve status:\n"
                + self.serve_status()
            ),
        )


@contextlib.contextmanager
def running_cluster(workdir: Path, redis: tuple[str, str] | None = None) -> Iterator[Cluster]:
    cluster = Cluster(workdir, redis)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def in_process_ray(num_cpus: int) -> Iterator[None]:
    """Ray started in this process (`ray.init`) as a new local instance with ``num_cpus``
    and its own temp dir: never a cluster already running on this machine (which a bare
    ``ray.init()`` would join). ``ray.shutdown()`` ends what it started."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="sparc-", dir="/tmp")  # nosec B108 (short: Ray's sockets)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp_dir,
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def end_release(cluster: Cluster, store: Path, name: str) -> str | None:
    """Abort the release (canary or shadow) of ``name`` still in progress, if any, with
    `sparc-ray models abort`, and wait until the app no longer serves it; returns the aborted
    release's id. Modules whose tests share a deployment call it after every test (an autouse
    fixture), so a test that fails mid-release does not fail the next one that starts a
    release ("release ... is in progress; abort it first")."""
    release = current_release(ModelRegistry(store), name)
    if release is None:
        return None
    cluster.run(
        sys.executable, "-m", "sparc_ray.cli", "models", "abort",
        "--store", str(store), "--name", name,
    )  # fmt: skip
    wait_until(
        lambda: httpx.get(f"{cluster.url}/health", timeout=30).json()["release"] is None,
        timeout=60,
        message=f"the app to drop release {release.id} of {name} after `sparc-ray models abort`",
        ignore=(httpx.HTTPError,),
    )
    return release.id
