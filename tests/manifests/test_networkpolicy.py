"""Network policies: only Serve's port 8000 is open to clients, egress is denied by default and
allowed narrowly, each Ray cluster's pods reach each other, and only the GCS-FT heads reach
Redis (the policies evaluated with Kubernetes' label-selector semantics)."""

from __future__ import annotations

import pytest

from tests.manifests.helpers import (
    DASHBOARD_PORT,
    GCS_FT_DOCS,
    GCS_FT_KINDS,
    METRICS_PORT,
    RAY_DOCS,
    REDIS_PORT,
    SERVE_PORT,
    cluster_spec,
    doc_id,
    doc_ids,
    every,
    only,
    pod_templates,
    redis_deployment,
    redis_pod_selector,
)
from tests.manifests.kuberay_pods import monitoring_stack, selects


def _pod_labels() -> dict[str, dict]:
    """instance label -> labels of the pod templates carrying it."""
    out = {}
    for _, doc in RAY_DOCS:
        for _, tpl in pod_templates(doc):
            labels = tpl["metadata"]["labels"]
            out[labels["app.kubernetes.io/instance"]] = labels
    return out


def _ports(rule: dict) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def _other_namespaces() -> list[tuple[dict, dict, set[int]]]:
    """(namespace labels, pod labels, ports) egress may reach outside the namespace: DNS,
    and the Prometheus and Grafana of the monitoring stack on their pods' ports."""
    namespace, backends = monitoring_stack()
    monitoring = {"kubernetes.io/metadata.name": namespace}
    return [
        ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}, {53}),
        *((monitoring, b.pod_labels, {b.pod_port}) for b in backends.values()),
    ]


def test_network_policies_expose_only_serve_port():
    policies = every("NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "Ingress" in p["spec"]["policyTypes"]
        and not p["spec"].get("ingress")
    ]
    assert deny, "no default-deny ingress policy"
    instances = _pod_labels()
    serve_instance = only("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"][
        "metadata"
    ]["labels"]["app.kubernetes.io/instance"]
    for pol in policies:
        name = pol["metadata"]["name"]
        selector = pol["spec"]["podSelector"].get("matchLabels", {})
        if selector == redis_pod_selector():  # Redis: its own port only (see GCS FT below)
            assert all(_ports(r) == {REDIS_PORT} for r in pol["spec"]["ingress"]), name
        elif "app.kubernetes.io/instance" in selector:
            assert selector["app.kubernetes.io/instance"] in instances, name
        for rule in pol["spec"].get("ingress", []):
            sources = rule.get("from", [])
            ports = _ports(rule)
            if not sources:  # open to any client
                assert ports == {SERVE_PORT}, f"{name}: open rule on ports {ports}"
                assert selector.get("app.kubernetes.io/instance") == serve_instance, name
                continue
            if DASHBOARD_PORT in ports or not ports:
                for src in sources:
                    assert "ipBlock" not in src, name
                    peer = src.get("podSelector", {}).get("matchLabels", {})
                    if not ports:  # Ray-internal: same cluster only
                        assert "namespaceSelector" not in src, name
                        assert peer == selector, f"{name}: Ray ports open beyond the cluster"
                    elif "namespaceSelector" in src:
                        assert peer.get("app.kubernetes.io/name") == "kuberay-operator", name
                    else:
                        assert peer.get("app.kubernetes.io/instance") in instances, name
            if METRICS_PORT in ports:
                assert ports == {METRICS_PORT}, name


def test_egress_is_denied_by_default_and_allowed_narrowly():
    policies = [p for p in every("NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
    default = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(default) == 1, "no default-deny egress policy"
    instances = _pod_labels()
    for pol in policies:
        name = pol["metadata"]["name"]
        selector = pol["spec"]["podSelector"].get("matchLabels", {})
        for rule in pol["spec"]["egress"]:
            ports = _ports(rule)
            for peer in rule["to"]:
                if "ipBlock" in peer:  # outside the cluster: explicit CIDR, HTTPS / API only
                    assert peer["ipBlock"]["cidr"] != "0.0.0.0/0", name
                    assert ports and ports <= {443, 6443}, name
                    continue
                target = peer["podSelector"]["matchLabels"]
                if "namespaceSelector" in peer:  # DNS, or Prometheus / Grafana for the heads
                    namespace = peer["namespaceSelector"]["matchLabels"]
                    assert (namespace, target, ports) in _other_namespaces(), name
                elif not ports:  # Ray-internal: same cluster only
                    assert target == selector, f"{name}: egress beyond its own cluster"
                elif target == redis_pod_selector():  # GCS FT: Redis's port only
                    assert ports == {REDIS_PORT}, name
                else:
                    assert ports == {DASHBOARD_PORT}, name
                    assert target["app.kubernetes.io/instance"] in instances, name


def _allowed(direction: str, pod: dict, peer: dict, port: int) -> bool:
    """Does some policy selecting `pod` allow `direction` traffic with `peer` (same namespace)?"""
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for pol in every("NetworkPolicy"):
        if direction not in pol["spec"]["policyTypes"]:
            continue
        if not selects(pol["spec"]["podSelector"], pod):
            continue
        for rule in pol["spec"].get(key, []):
            if rule.get("ports") and port not in _ports(rule):
                continue
            if not rule.get(peers):  # any peer
                return True
            for p in rule[peers]:
                same_namespace = "namespaceSelector" not in p and "ipBlock" not in p
                if same_namespace and selects(p.get("podSelector", {}), peer):
                    return True
    return False


def _ray_pods() -> dict[str, dict]:
    """Labels of every Ray pod as KubeRay creates it (template labels + node type), and of
    the Redis cleanup Job's pod (a copy of the head pod) of the GCS-FT clusters."""
    pods = {}
    for _, doc in RAY_DOCS:
        for role, labels in _cluster_pods(doc).items():
            pods[f"{doc_id(doc)}/{role}"] = labels
            if role == "head" and doc["kind"] in GCS_FT_KINDS:
                pods[f"{doc_id(doc)}/redis-cleanup"] = labels | {
                    "ray.io/node-type": "redis-cleanup"
                }
    return pods


def _cluster_pods(doc: dict) -> dict[str, dict]:
    """role -> labels of the pods of one Ray CR as KubeRay creates them (template labels +
    node type) and of a RayJob's submitter."""
    pods = {}
    for role, tpl in pod_templates(doc):
        labels = dict(tpl["metadata"]["labels"])
        if role != "submitter":
            labels["ray.io/node-type"] = "head" if role == "head" else "worker"
            labels["ray.io/is-ray-node"] = "yes"
        pods[role] = labels
    return pods


def test_only_the_gcs_ft_heads_reach_redis():
    redis = redis_deployment()["spec"]["template"]["metadata"]["labels"]
    pods = _ray_pods()
    expected = {
        f"{doc_id(doc)}/{role}" for _, doc in GCS_FT_DOCS for role in ("head", "redis-cleanup")
    }
    # Each direction on its own: Redis lets exactly these in, and exactly these may go out.
    ingress = {
        name for name, labels in pods.items() if _allowed("Ingress", redis, labels, REDIS_PORT)
    }
    egress = {
        name for name, labels in pods.items() if _allowed("Egress", labels, redis, REDIS_PORT)
    }
    assert ingress == expected, f"Redis ingress from {sorted(ingress)}"
    assert egress == expected, f"egress to Redis from {sorted(egress)}"
    # Nothing else in the namespace gets in either (a pod with no labels), and Redis
    # itself opens no connection to any Ray pod.
    assert not _allowed("Ingress", redis, {}, REDIS_PORT)
    for labels in pods.values():
        assert not _allowed("Egress", redis, labels, REDIS_PORT)


# Ray ports a cluster's pods use among themselves (GCS, dashboard, client, metrics, and
# one from the raylet / worker range): the policies must let each pod reach every other.
RAY_INTERNAL_PORTS = (REDIS_PORT, DASHBOARD_PORT, 10001, METRICS_PORT, 10002)


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_the_network_policies_connect_each_ray_cluster(src, doc):
    pods = _cluster_pods(doc)
    nodes = {role: labels for role, labels in pods.items() if role != "submitter"}
    for a, pod in nodes.items():
        for b, peer in nodes.items():
            for port in RAY_INTERNAL_PORTS:
                assert _allowed("Egress", pod, peer, port), f"{src}: {a} -> {b}:{port} (egress)"
                assert _allowed("Ingress", peer, pod, port), f"{src}: {a} -> {b}:{port} (ingress)"
    if "submitter" in pods:  # `ray job submit` / `ray job logs` against the Jobs API
        sub, head = pods["submitter"], nodes["head"]
        assert _allowed("Egress", sub, head, DASHBOARD_PORT), f"{src}: submitter egress"
        assert _allowed("Ingress", head, sub, DASHBOARD_PORT), f"{src}: submitter ingress"


def test_only_head_pods_reach_the_kubernetes_api():
    """Policy 9: the autoscaler sidecar (head pod) scales the workers; no worker, the
    internet-facing serve workers included, reaches the API server or that policy's
    object-store range."""
    pods = _ray_pods()
    outside = [
        p
        for p in every("NetworkPolicy")
        for rule in p["spec"].get("egress", [])
        if any("ipBlock" in peer for peer in rule["to"]) and 6443 in _ports(rule)
    ]
    assert len(outside) == 1, "one policy opens the Kubernetes API"
    selected = {
        pod for pod, labels in pods.items() if selects(outside[0]["spec"]["podSelector"], labels)
    }
    autoscaled = {
        f"{doc_id(doc)}/head"
        for _, doc in RAY_DOCS
        if cluster_spec(doc).get("enableInTreeAutoscaling")
    }
    assert selected == autoscaled, selected ^ autoscaled
