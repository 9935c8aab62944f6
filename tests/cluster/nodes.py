"""A multi-node Ray cluster on one machine, as KubeRay runs one: a head with no CPUs plus
worker nodes, each a `ray start --block` in its own host (tests/cluster/netns.py), with one CPU
and a custom resource naming it (``{"node_a": 1}``), so tests place work on a node and kill it.

A node is killed with SIGKILL on every process of its host (raylet, workers, HAProxy) and
restarted with the same command, as a pod restart would be, once the GCS has marked the old
node dead. Everything started here is stopped by PID; nothing else is touched.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sparc_ray.serving.fastpath import read_env
from sparc_ray.training.placement import TRIAL_NODE_RESOURCE, TRIAL_NODE_UNITS
from tests.cluster.netns import Host, Network
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GCS_PORT, DASHBOARD_PORT, SERVE_PORT = 6379, 8265, 8000  # in every node's own namespace


@dataclass
class Node:
    name: str  # also its custom resource, e.g. "node_a" (the head: "head")
    host: Host
    command: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)
    ids: list[str] = field(default_factory=list)  # Ray's node id of each incarnation

    @property
    def node_id(self) -> str | None:
        return self.ids[-1] if self.ids else None

    @property
    def url(self) -> str:
        """This node's Serve proxy."""
        return f"http://{self.host.address}:{SERVE_PORT}"


class MultiNodeCluster:
    """``workers`` worker nodes named node_a, node_b, ...; ``trial_nodes`` of them also
    advertise ``sparc_trials`` (where Tune's trial actors may run)."""

    def __init__(
        self,
        workdir: Path,
        workers: int = 3,
        trial_nodes: Iterable[str] = ("node_a",),
        cpus_per_node: int = 1,
    ) -> None:
        self.workdir = workdir
        self.network = Network(workers + 1)
        self.temp_dir = Path(f"/tmp/{self.network.prefix}")  # short: Ray's socket paths
        head_host, *worker_hosts = self.network.hosts
        self.address = f"{head_host.address}:{GCS_PORT}"
        self.dashboard_url = f"http://{head_host.address}:{DASHBOARD_PORT}"
        self.auth: dict[str, str] = {}
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # `python` in job entrypoints
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            **read_env(ROOT / "serve.env"),
            "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            # The GCS declares a node dead after 3 missed 1 s health checks (Ray: 5 x 3 s).
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        common = [
            str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        self.head = Node(
            "head",
            head_host,
            [
                *common, "--head", "--num-cpus=0", f"--port={GCS_PORT}",
                f"--node-ip-address={head_host.address}", "--dashboard-host=0.0.0.0",
                f"--dashboard-port={DASHBOARD_PORT}", "--object-store-memory=200000000",
                "--resources={\"head\": 1}",
            ],
        )  # fmt: skip
        trial_nodes = set(trial_nodes)
        self.workers = []
        for i, host in enumerate(worker_hosts):
            name = f"node_{chr(ord('a') + i)}"
            resources = {
                name: 1,
                **({TRIAL_NODE_RESOURCE: TRIAL_NODE_UNITS} if name in trial_nodes else {}),
            }
            cmd = [
                *common, f"--address={self.address}", f"--node-ip-address={host.address}",
                f"--num-cpus={cpus_per_node}", f"--resources={json.dumps(resources)}",
                "--object-store-memory=400000000",
            ]  # fmt: skip
            self.workers.append(Node(name, host, cmd))

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- processes --------------------------------------------------------------------------
    def run(
        self, *cmd: str, host: Host | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess:
        """A command in the test's namespace, or on ``host`` (e.g. a driver on the head)."""
        full = [*(host.exec if host else []), *cmd]
        r = subprocess.run(
            full, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            )
        return r

    def _launch(self, node: Node) -> None:
        log = open(self.workdir / f"{node.name}.log", "ab")  # noqa: SIM115 (the node's)
        node.process = subprocess.Popen(
            [*node.host.exec, *node.command],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def start(self, workers: int | None = None) -> None:
        """The head, then the first ``workers`` worker nodes (all by default)."""
        # Prints the token, creating ~/.ray/auth_token if missing (every node reads it).
        token = self.run(str(BIN / "ray"), "get-auth-token", "--generate").stdout.split()[-1]
        self.auth = {"Authorization": f"Bearer {token}"}
        self._launch(self.head)
        self.wait_alive([self.head], timeout=120)
        for node in self.workers[:workers]:  # one by one: nodes sharing a temp dir race
            self._launch(node)  # for the names of their sockets
            self.wait_alive([node], timeout=120)

    def ensure(self, *names: str) -> None:
        """Start whichever of ``names`` is not running (a test leaves nodes as it needs)."""
        for name in names:
            if not self.running(name):
                self.restart(name)

    def running(self, name: str) -> bool:
        node = self.node(name)
        return node.process is not None and node.process.poll() is None

    def stop(self) -> None:
        """Every process of every node (by namespace), then the hosts themselves."""
        for node in self.nodes:
            node.host.kill()
            if node.process is not None:
                node.process.wait(timeout=30)
        self.network.remove()
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # the nodes' session dirs and logs

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, *command: str, env: dict[str, str] | None = None) -> str:
        """`ray job submit --no-wait` to the head (the driver runs there, in ``workdir``, as
        on KubeRay), with ``env`` in the job's runtime environment (its driver and every
        task and actor); returns the submission id."""
        entrypoint = f"cd {shlex.quote(str(self.workdir))} && " + shlex.join(command)
        runtime_env = ["--runtime-env-json", json.dumps({"env_vars": env})] if env else []
        out = self.run(
            str(BIN / "ray"), "job", "submit", f"--address={self.dashboard_url}", "--no-wait",
            *runtime_env, "--", "bash", "-c", entrypoint,
        ).stdout  # fmt: skip
        match = re.search(r"raysubmit_\w+", out)
        assert match, out
        return match.group(0)

    def job(self, submission_id: str) -> dict:
        """The job's record (status, job_id, driver_exit_code, message)."""
        url = f"{self.dashboard_url}/api/jobs/{submission_id}"
        r = httpx.get(url, headers=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def logs(self, submission_id: str) -> str:
        """The job driver's output so far."""
        url = f"{self.dashboard_url}/api/jobs/{submission_id}/logs"
        return httpx.get(url, headers=self.auth, timeout=30).json()["logs"]

    def wait_job(self, submission_id: str, timeout: float = 600) -> tuple[dict, str]:
        """Wait until the job has ended; returns its record and its driver's log."""
        wait_until(
            lambda: self.job(submission_id)["status"] in ("SUCCEEDED", "FAILED", "STOPPED"),
            timeout,
            interval=1,
            message=f"job {submission_id} to end",
            ignore=(httpx.HTTPError,),
        )
        return self.job(submission_id), self.logs(submission_id)

    # -- node loss and return ---------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL the node ``name`` (raylet, workers, proxy), then wait until the GCS has
        marked it dead, as it would a lost pod."""
        node = self.node(name)
        node.host.kill()
        if node.process is not None:
            node.process.wait(timeout=30)
        dead = node.node_id
        wait_until(
            lambda: self.ray_nodes().get(dead, {}).get("state") == "DEAD",
            timeout=90,
            interval=0.5,
            message=f"the GCS to mark {name} ({dead}) dead",
        )

    def restart(self, name: str) -> None:
        """Start ``name`` (again) with the same command: a pod restart, or a node joining."""
        node = self.node(name)
        self._launch(node)
        self.wait_alive([node], timeout=120)

    # -- state ------------------------------------------------------------------------------
    def state(self, kind: str, **filters: str) -> list[dict]:
        """Ray's state API (``/api/v0/<kind>``: nodes, tasks, actors), read over the
        dashboard's HTTP with the cluster's token; ``filters``: key=value predicates."""
        params: list[tuple[str, str | int]] = [("limit", 10000), ("detail", 1)]
        for key, value in filters.items():
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        r = httpx.get(
            f"{self.dashboard_url}/api/v0/{kind}", params=params, headers=self.auth, timeout=30
        )
        r.raise_for_status()
        return r.json()["data"]["result"]["result"]

    def ray_nodes(self) -> dict[str, dict]:
        """Every node the GCS knows, by id."""
        return {n["node_id"]: n for n in self.state("nodes")}

    def wait_alive(self, nodes: list[Node], timeout: float) -> None:
        """Wait until each of ``nodes`` has a live incarnation; records its node id."""

        def alive() -> bool:
            live = {n["node_ip"]: i for i, n in self.ray_nodes().items() if n["state"] == "ALIVE"}
            for node in nodes:
                if node.process is not None and node.process.poll() is not None:
                    log = (self.workdir / f"{node.name}.log").read_text()[-3000:]
                    raise RuntimeError(f"`ray start` of {node.name} exited:\n{log}")
                node_id = live.get(node.host.address)
                if node_id is None:
                    return False
                if node_id not in node.ids:
                    node.ids.append(node_id)
            return True

        wait_until(
            alive,
            timeout,
            interval=0.5,
            message=lambda: f"nodes {[n.name for n in nodes]} alive: {self.ray_nodes()}",
            ignore=(httpx.HTTPError, KeyError, ValueError),
        )
