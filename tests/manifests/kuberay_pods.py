"""The pods the manifests make, as the label sets Kubernetes selects them by, and the monitoring
stack kuberay/monitoring/ is set up for: what the PodDisruptionBudget and NetworkPolicy tests
evaluate label selectors against (Kubernetes' semantics, `selects`)."""

from __future__ import annotations

from typing import NamedTuple

import yaml

from tests.manifests.helpers import (
    GCS_FT_KINDS,
    MONITORING,
    RAY_DOCS,
    doc_id,
    every,
    pod_templates,
    redis_deployment,
)

# RayService and RayJob clusters get a generated name: <name>-<random suffix>.
GENERATED_SUFFIX = "x7k2p"


def cluster_name(doc: dict, suffix: str = GENERATED_SUFFIX) -> str:
    name = doc["metadata"]["name"]
    return name if doc["kind"] == "RayCluster" else f"{name}-{suffix}"


def kuberay_labels(role: str, template_labels: dict, cluster: str) -> dict[str, str]:
    """Labels of a Ray pod as KubeRay v1.7 creates it (ray-operator/controllers/ray/common/
    pod.go, labelPod): its defaults, overridden by the template's labels except node type,
    group and cluster, which KubeRay always sets itself."""
    assert role == "head" or role.startswith("worker/"), role
    node_type = "head" if role == "head" else "worker"
    group = "headgroup" if role == "head" else role.removeprefix("worker/")
    labels = {
        "ray.io/is-ray-node": "yes",
        "ray.io/identifier": f"{cluster}-{node_type}",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    labels |= template_labels
    return labels | {
        "ray.io/cluster": cluster,
        "ray.io/node-type": node_type,
        "ray.io/group": group,
    }


def cluster_pods(doc: dict, suffix: str = GENERATED_SUFFIX) -> dict[str, dict[str, str]]:
    """role -> labels of every pod of one Ray CR: head, one per worker group, a RayJob's
    submitter, and the Redis cleanup Job's pod (a copy of the head) of a GCS-FT cluster."""
    pods = {}
    for role, tpl in pod_templates(doc):
        labels = dict(tpl["metadata"].get("labels", {}))
        if role != "submitter":
            labels = kuberay_labels(role, labels, cluster_name(doc, suffix))
        pods[role] = labels
    if doc["kind"] in GCS_FT_KINDS:
        pods["redis-cleanup"] = pods["head"] | {"ray.io/node-type": "redis-cleanup"}
    return pods


def namespace_pods() -> dict[str, dict[str, str]]:
    """Every pod the manifests put into the namespace: the Ray pods (`<Kind>/<name>/<role>`)
    and Redis."""
    pods = {
        f"{doc_id(doc)}/{role}": labels
        for _, doc in RAY_DOCS
        for role, labels in cluster_pods(doc).items()
    }
    pods["Deployment/sparc-redis"] = redis_deployment()["spec"]["template"]["metadata"]["labels"]
    return pods


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, op = labels.get(e["key"]), e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and value in e["values"]:
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True


class Backend(NamedTuple):
    """A kube-prometheus-stack component as the heads reach it."""

    service: str  # in-cluster Service name
    service_port: int
    pod_labels: dict[str, str]
    pod_port: int  # what a NetworkPolicy sees (after the Service's forwarding)


def monitoring_stack() -> tuple[str, dict[str, Backend]]:
    """Namespace and Prometheus / Grafana of the kube-prometheus-stack kuberay/monitoring/ is
    written for: its Helm release is the `release` label the PodMonitors and the
    PrometheusRule carry (the chart selects them by it), its namespace the one the Grafana
    dashboard ConfigMap goes to (the chart's Grafana sidecar watches its own namespace).
    Service names and ports follow the chart's templates."""
    monitors = every("PodMonitor") + every("PrometheusRule")
    releases = {d["metadata"]["labels"]["release"] for d in monitors}
    assert monitors and len(releases) == 1, f"monitoring/: one release label, not {releases}"
    (release,) = releases
    generators = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (namespace,) = {g["namespace"] for g in generators["configMapGenerator"]}
    # kube-prometheus-stack.fullname: <release>-<chart>, truncated to 26 characters.
    chart = "kube-prometheus-stack"
    fullname = (release if chart in release else f"{release}-{chart}")[:26].rstrip("-")
    prometheus = f"{fullname}-prometheus"  # the Prometheus CR and its Service
    grafana = release if "grafana" in release else f"{release}-grafana"  # grafana subchart
    return namespace, {
        # Pods of the Prometheus Operator's StatefulSet for that Prometheus CR.
        "prometheus": Backend(
            prometheus,
            9090,
            {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": prometheus},
            9090,
        ),
        # The grafana chart's Service: port 80 -> the pod's 3000.
        "grafana": Backend(
            grafana,
            80,
            {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": release},
            3000,
        ),
    }
