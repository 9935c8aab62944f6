"""Serve's fast path from serve.env: HAProxy fronts the app, and teardown leaves none behind."""

from __future__ import annotations

import socket

import httpx
import pytest

from sparc_ray.serving.fastpath import haproxy_pids
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.cluster


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_haproxy_serves_the_app_and_is_gone_after_teardown(tmp_path):
    cluster = Cluster(tmp_path)
    cluster.start()
    try:
        cluster.deploy(cluster.serve_config(), healthy=(503,))  # nothing trained: 503
        pids = haproxy_pids(cluster.haproxy_dir)
        assert pids, "serve.env turns HAProxy on, but no HAProxy process serves the app"
        r = httpx.get(f"{cluster.url}/health", timeout=10)
        assert r.status_code == 503 and r.json()["model_loaded"] is False
    finally:
        cluster.stop()
    assert not haproxy_pids(cluster.haproxy_dir) and port_is_free(cluster.serve_port)
    assert not cluster.processes(), "a process of the cluster outlived the teardown"
