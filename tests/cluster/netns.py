"""Hosts for a multi-node Ray cluster on one machine: one network namespace per Ray node.

Each namespace is a host of its own (its loopback, one address on a private /24, its own port
space), joined to the others by a bridge that also carries one address in the test's own
namespace, so the test reaches every node (HTTP, the dashboard, `ray job submit`) and nothing
else is reachable. Every node binds Ray's and Serve's usual ports in its own namespace: Serve's
proxies (HAProxy on every node) do not compete for one port, and nothing collides with a
developer's own Ray cluster. Everything is created under one unique prefix and removed by
that prefix: the interfaces and namespaces of other runs are never touched.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from sparc_ray.serving.fastpath import end_processes


class NetnsUnavailable(RuntimeError):
    """This machine does not let the test create network namespaces (not root?)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _free_subnet() -> str:
    """A 10.213.X.0/24 that no route of this machine uses yet."""
    routes = _ip("-4", "route", "show", "table", "all").stdout
    for x in [*range(os.getpid() % 200 + 20, 250), *range(20, 250)]:
        if f"10.213.{x}." not in routes:
            return f"10.213.{x}"
    raise NetnsUnavailable("no free 10.213.X.0/24 subnet")


@dataclass(frozen=True)
class Host:
    """One namespace: ``exec`` prefixes a command to run in it."""

    ns: str
    address: str

    @property
    def exec(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def pids(self) -> list[int]:
        """Every process in this namespace: what a node kill ends."""
        out = _ip("netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> int:
        """SIGKILL every process of this host (a node's raylet, its workers, its HAProxy);
        returns how many there were."""
        pids = self.pids()
        end_processes(pids, grace_s=0)
        return len(pids)


class Network:
    """``n`` hosts on a bridge; host ``i`` (from 1) has address ``<subnet>.i``; the test's
    own namespace is ``<subnet>.254``."""

    def __init__(self, n: int) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        self.prefix = f"sr{os.getpid() % 100000}"
        self.subnet = _free_subnet()
        self.bridge = f"{self.prefix}br"
        self.gateway = f"{self.subnet}.254"  # the test's own address on the bridge
        self.hosts: list[Host] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(1, n + 1):
                self.hosts.append(self._add_host(i))
        except BaseException:
            self.remove()
            raise

    def _add_host(self, i: int) -> Host:
        host = Host(f"{self.prefix}n{i}", f"{self.subnet}.{i}")
        outer, inner = f"{self.prefix}v{i}", f"{self.prefix}p{i}"
        _ip("netns", "add", host.ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", host.ns)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", inner)
        _ip("-n", host.ns, "link", "set", inner, "up")
        _ip("-n", host.ns, "link", "set", "lo", "up")
        return host

    def remove(self) -> None:
        """Kill what still runs in the hosts, then remove them and the bridge."""
        for i, host in enumerate(self.hosts, start=1):
            host.kill()
            _ip("link", "delete", f"{self.prefix}v{i}", check=False)  # and its peer
            _ip("netns", "delete", host.ns, check=False)
        _ip("link", "delete", self.bridge, check=False)
        self.hosts = []
