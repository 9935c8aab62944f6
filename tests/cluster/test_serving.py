"""`serve deploy serve_config.yaml` on the multi-node cluster: replicas on several nodes, a proxy
(HAProxy) on every node, and a worker node SIGKILLed under load from clients spread over the
other nodes' proxies: ≥ 99.5% answer 200, the rest a clean 503, the release state stays."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from sparc_ray.registry.releases import current_release
from sparc_ray.registry.store import ModelRegistry
from tests.cluster.nodes import BIN, ROOT, MultiNodeCluster, Node
from tests.cluster.test_training import train, write_config
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster

ROW = {
    "alcohol": 13.2, "malic_acid": 1.78, "ash": 2.14, "alcalinity_of_ash": 11.2,
    "magnesium": 100.0, "total_phenols": 2.65, "flavanoids": 2.76,
    "nonflavanoid_phenols": 0.26, "proanthocyanins": 1.28, "color_intensity": 4.38,
    "hue": 1.05, "od280/od315_of_diluted_wines": 3.4, "proline": 1050.0,
}  # fmt: skip
SPACE = {"logistic_regression": {"C": [1.0]}}


def serve_config(cluster: MultiNodeCluster, store: Path) -> Path:
    """serve_config.yaml for the wine model in ``store``: two Model replicas at least, and
    Validator and Model replicas on distinct nodes (as a multi-node deployment would pin
    them with ``max_replicas_per_node``)."""
    cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    app = cfg["applications"][0]
    app["args"].update(
        model_store=str(store), model_name="wine",
        public_key=str(cluster.workdir / "keys/model_signing.pub"),
    )  # fmt: skip
    for dep in app["deployments"]:
        if dep["name"] in ("Validator", "Model"):  # one replica a node: spread, always
            dep["max_replicas_per_node"] = 1
        if dep["name"] == "Model":
            dep["autoscaling_config"]["min_replicas"] = 2
    path = cluster.workdir / "serve_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def replicas(cluster: MultiNodeCluster, deployment: str) -> Counter:
    """Live replicas of ``deployment`` by node name."""
    names = {i: n.name for n in cluster.nodes for i in n.ids}
    actors = cluster.state("actors", state="ALIVE")
    return Counter(
        names.get(a["node_id"], a["node_id"])
        for a in actors
        if a["class_name"] == f"ServeReplica:sparc:{deployment}"
    )


def load(urls: list[str], stop: threading.Event, outcomes: list) -> None:
    """One client: single-row /predict in turn to each proxy; records (time, status)."""
    with httpx.Client(timeout=10) as client:
        i = 0
        while not stop.is_set():
            url = urls[i % len(urls)]
            i += 1
            try:
                body = {"instances": [ROW]}
                status = client.post(f"{url}/predict", json=body).status_code
            except httpx.TimeoutException:
                status = "hang"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            outcomes.append((time.monotonic(), status))


def health(node: Node) -> dict:
    return httpx.get(f"{node.url}/health", timeout=10).json()


def test_serving_survives_the_loss_of_a_worker_node(multinode):
    cluster = multinode
    cluster.ensure("node_a", "node_b", "node_c")
    try:
        check_serving_through_a_node_loss(cluster)
    finally:  # the next tests find every node up and no Serve app holding CPUs
        cluster.ensure("node_a", "node_b", "node_c")
        cluster.run(str(BIN / "serve"), "shutdown", "-y", "-a", cluster.dashboard_url)


def check_serving_through_a_node_loss(cluster: MultiNodeCluster) -> None:
    # Two versions: production, and a 20% canary started by the second training job.
    config = write_config(cluster, "serving", space=SPACE)
    policy = cluster.workdir / "hold-release.yaml"  # the canary stays a canary in this test
    policy.write_text(yaml.safe_dump({"auto_promote": False, "auto_rollback": False}))
    canary = ("--release", "canary", "--release-weight", "20", "--release-policy", str(policy))
    for extra in ((), canary):
        job = cluster.wait_job(train(cluster, config, *extra))
        assert job[0]["driver_exit_code"] == 0, job[1][-3000:]
    store = cluster.workdir / "serving/store"
    registry = ModelRegistry(store)
    production, release = registry.alias("wine"), current_release(registry, "wine")
    assert release is not None and release.weight == 20

    cluster.run(str(BIN / "serve"), "deploy", str(serve_config(cluster, store)),
                "-a", cluster.dashboard_url)  # fmt: skip
    wait_until(
        lambda: all(health(n)["status"] == "healthy" for n in cluster.nodes),
        240,
        interval=1,
        message="GET /health healthy from every node's proxy",
        ignore=(httpx.HTTPError, ValueError, KeyError),
    )
    # Validator replicas on more than one node; a proxy answering on every node.
    assert len(replicas(cluster, "Validator")) >= 2
    models = replicas(cluster, "Model")
    assert len(models) >= 2, models  # Model replicas on two nodes
    for node in cluster.nodes:
        assert health(node)["release"]["weight"] == 20

    victim = next(n for n in cluster.workers if models[n.name])  # holds a Model replica
    urls = [n.url for n in cluster.nodes if n is not victim]  # the surviving nodes' proxies
    stop, outcomes = threading.Event(), []
    clients = [threading.Thread(target=load, args=(urls, stop, outcomes)) for _ in range(8)]
    for c in clients:
        c.start()
    try:
        wait_until(lambda: len(outcomes) >= 200, 60, message="load running")
        killed_at = time.monotonic()
        cluster.kill(victim.name)
        wait_until(lambda: time.monotonic() - killed_at >= 60, 90, interval=1)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=30)
    after = [s for t, s in outcomes if t >= killed_at and t < killed_at + 60]
    counts = Counter(after)
    print(f"after the kill of {victim.name}: {dict(counts)}")
    assert counts[200] / len(after) >= 0.995, counts
    # No hang, no 500. Still seen (issue 19): now and then one keep-alive connection closed
    # without an answer while HAProxy reloads for the new replica set (1 in ~13,000 here);
    # bounded, not hidden.
    assert not {"hang", 500} & set(counts), counts
    assert set(counts) <= {200, 503, "RemoteProtocolError"}, counts
    assert counts["RemoteProtocolError"] / len(after) <= 0.001, counts

    cluster.restart(victim.name)
    back = time.monotonic()
    wait_until(
        lambda: (
            sum(replicas(cluster, "Model").values()) >= 2
            and sum(replicas(cluster, "Validator").values()) >= 2
        ),
        60,
        interval=1,
        message="Model and Validator replicas back at their targets",
    )
    assert time.monotonic() - back <= 60
    # The release state is what it was: the same production, the same 20% canary.
    assert registry.alias("wine") == production
    assert current_release(registry, "wine") == release
    assert all(health(n)["release"]["weight"] == 20 for n in cluster.nodes if n is not victim)
