"""The PodDisruptionBudget (kuberay/pdb.yaml): it selects exactly the serve worker pods of the
RayService as KubeRay labels them (checked against every pod the manifests make: each Ray
pod, the submitters, KubeRay's Redis cleanup pods, Redis), whatever name the RayService
gives its cluster; it uses the one budget form Kubernetes can evaluate for pods a RayCluster
owns; it ships with the RayService. Its schema: test_schemas.py."""

from __future__ import annotations

import yaml

from tests.manifests.helpers import DOCS, KUBERAY, cluster_spec, doc_id, every, only
from tests.manifests.kuberay_pods import cluster_pods, namespace_pods, selects


def _pdb() -> dict:
    found = [(src, d) for src, d in DOCS if d["kind"] == "PodDisruptionBudget"]
    assert [src for src, _ in found] == ["kuberay/pdb.yaml"], "one PDB, in kuberay/pdb.yaml"
    return found[0][1]


def _serve_groups() -> list[dict]:
    return cluster_spec(only("RayService"))["workerGroupSpecs"]


def test_the_pdb_selects_exactly_the_serve_workers_of_the_rayservice():
    service = only("RayService")
    expected = {f"{doc_id(service)}/worker/{g['groupName']}" for g in _serve_groups()}
    pods = namespace_pods()
    assert expected <= set(pods), "the RayService's worker pods were not found"
    selector = _pdb()["spec"]["selector"]
    selected = {name for name, labels in pods.items() if selects(selector, labels)}
    # Not the head (one per cluster: no budget for it), not another cluster's workers, not
    # the Redis cleanup pods or Redis.
    assert selected == expected, f"selected {sorted(selected)}, expected {sorted(expected)}"


def test_the_pdb_follows_the_rayservice_to_every_new_cluster():
    # The RayService names its RayCluster <name>-<random>, and an upgrade (upgradeStrategy
    # NewCluster) brings a new one: the selector must not depend on that name.
    service, selector = only("RayService"), _pdb()["spec"]["selector"]
    for suffix in ("abcde", "q9z7w"):
        pods = cluster_pods(service, suffix)
        workers = {r for r in pods if r.startswith("worker/")}
        assert workers and {r for r in pods if selects(selector, pods[r])} == workers, suffix


def test_every_pdb_leaves_the_heads_alone():
    heads = {n: lb for n, lb in namespace_pods().items() if lb.get("ray.io/node-type") == "head"}
    assert heads
    for pdb in every("PodDisruptionBudget"):
        for name, labels in heads.items():
            assert not selects(pdb["spec"]["selector"], labels), (pdb["metadata"]["name"], name)


def test_the_budget_is_one_kubernetes_can_evaluate_for_raycluster_pods():
    """The worker pods are owned by a RayCluster, which has no `scale` subresource: for such
    pods Kubernetes evaluates only an integer minAvailable; maxUnavailable or a percentage
    makes the PDB fail to sync with 0 disruptions allowed, i.e. it blocks every drain."""
    spec = _pdb()["spec"]
    assert "maxUnavailable" not in spec
    budget = spec["minAvailable"]
    assert isinstance(budget, int) and not isinstance(budget, bool), budget
    for group in _serve_groups():
        # One serve worker (proxy + replicas) always stays; a scaled-out group can drain.
        assert 1 <= budget < group["maxReplicas"], (budget, group["groupName"])
    # A worker that is not Ready never blocks a drain.
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_the_pdb_ships_with_the_rayservice():
    resources = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())["resources"]
    assert "pdb.yaml" in resources and "rayservice.yaml" in resources
