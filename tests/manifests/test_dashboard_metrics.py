"""The Ray dashboard's Metrics view (Prometheus + Grafana): every head gets RAY_PROMETHEUS_HOST,
RAY_PROMETHEUS_NAME, RAY_GRAFANA_HOST and RAY_GRAFANA_IFRAME_HOST from the one ConfigMap of
kuberay/dashboard-metrics.yaml, which the bundle deploys; the hosts are the Services of the
kube-prometheus-stack kuberay/monitoring/ is written for; the network policies let the
heads, and nothing else, reach those two; the browser's Grafana URL is the one the
documented port-forward gives."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml

from tests.manifests.helpers import (
    DOCS,
    KUBERAY,
    NAMESPACE,
    RAY_DOCS,
    ROOT,
    doc_ids,
    every,
    named,
    ray_containers,
)
from tests.manifests.kuberay_pods import monitoring_stack, namespace_pods, selects

CONFIGMAP = "sparc-dashboard-metrics"
# What Ray's dashboard reads (Ray docs: "Embed Grafana visualizations into Ray Dashboard").
HOSTS = ("RAY_PROMETHEUS_HOST", "RAY_GRAFANA_HOST", "RAY_GRAFANA_IFRAME_HOST")
VARIABLES = (*HOSTS, "RAY_PROMETHEUS_NAME")
# The name kube-prometheus-stack gives its Prometheus data source in Grafana.
DATA_SOURCE = "Prometheus"


def _head(doc: dict) -> dict:
    (head,) = [c for role, c in ray_containers(doc) if role == "head"]
    return head


def _env(container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it from the manifests: `envFrom`
    ConfigMaps in order (with their prefix), then `env` on top (literal values and
    configMapKeyRefs resolved; any other source as a marker)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = named("ConfigMap", source["configMapRef"]["name"])["data"]
            env |= {source.get("prefix", "") + k: v for k, v in data.items()}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            env[e["name"]] = named("ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[e["name"]] = e.get("value", f"<{e.get('valueFrom')}>")
    return env


def _values() -> dict[str, str]:
    return named("ConfigMap", CONFIGMAP)["data"]


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_every_head_reads_the_dashboard_metrics_configmap(src, doc):
    head = _head(doc)
    env = _env(head)
    for var in VARIABLES:
        assert env.get(var), f"{src}: the head has no {var}"
        assert env[var] == _values()[var], f"{src}: {var}={env[var]!r} differs from {CONFIGMAP}"
    # Written once: from the ConfigMap, never repeated (or overridden) in a head's `env`.
    refs = [s["configMapRef"]["name"] for s in head.get("envFrom", []) if "configMapRef" in s]
    assert refs.count(CONFIGMAP) == 1, src
    assert not {e["name"] for e in head.get("env", [])} & set(VARIABLES), src


def test_the_heads_agree():
    seen = {src: {v: _env(_head(doc)).get(v) for v in VARIABLES} for src, doc in RAY_DOCS}
    assert len({tuple(values.items()) for values in seen.values()}) == 1, seen


def test_the_configmap_is_deployed_with_the_heads():
    (src,) = [s for s, d in DOCS if d["kind"] == "ConfigMap" and d["metadata"]["name"] == CONFIGMAP]
    assert src == "kuberay/dashboard-metrics.yaml"
    assert named("ConfigMap", CONFIGMAP)["metadata"]["namespace"] == NAMESPACE  # the heads'
    resources = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())["resources"]
    assert "dashboard-metrics.yaml" in resources
    assert set(_values()) == set(VARIABLES), sorted(_values())


def _url(var: str):
    url = urlsplit(_values()[var])
    assert url.scheme in ("http", "https") and url.hostname, f"{var}: scheme and host needed"
    assert url.path == "" and not url.query, f"{var}: no path or trailing slash (Ray's rule)"
    return url


def test_the_hosts_are_the_monitoring_stacks_services():
    namespace, backends = monitoring_stack()
    for var, backend in (
        ("RAY_PROMETHEUS_HOST", backends["prometheus"]),
        ("RAY_GRAFANA_HOST", backends["grafana"]),
    ):
        url = _url(var)
        # <service>.<namespace>[.svc[.cluster.local]]: the heads live in another namespace.
        host = url.hostname.split(".")
        assert host[:2] == [backend.service, namespace], f"{var}: {url.hostname}"
        assert ".".join(host[2:]) in ("", "svc", "svc.cluster.local"), url.hostname
        assert (url.port or 80) == backend.service_port, f"{var}: port {url.port}"
    assert _values()["RAY_PROMETHEUS_NAME"] == DATA_SOURCE


def test_the_browser_reaches_grafana_through_the_documented_port_forward():
    namespace, backends = monitoring_stack()
    url = _url("RAY_GRAFANA_IFRAME_HOST")
    # Not an in-cluster name (a browser cannot resolve it), and same-site with the
    # dashboard's http://localhost:8265 (Grafana's login cookie reaches the iframe).
    assert url.hostname == "localhost", url.hostname
    grafana = backends["grafana"]
    forward = f"-n {namespace} port-forward svc/{grafana.service} {url.port}:{grafana.service_port}"
    for doc in ("docs/operations.md", "kuberay/dashboard-metrics.yaml"):
        assert forward in (ROOT / doc).read_text(), f"{doc} lacks `kubectl {forward}`"


def _egress_allowed(pod: dict, namespace: dict, peer: dict, port: int) -> bool:
    """Does a policy selecting `pod` let it open `port` on `peer` in another namespace?"""
    for pol in every("NetworkPolicy"):
        if "Egress" not in pol["spec"]["policyTypes"]:
            continue
        if not selects(pol["spec"]["podSelector"], pod):
            continue
        for rule in pol["spec"].get("egress", []):
            if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
                continue
            if not rule.get("to"):
                return True
            for p in rule["to"]:
                in_namespace = "namespaceSelector" in p and selects(
                    p["namespaceSelector"], namespace
                )
                if in_namespace and selects(p.get("podSelector", {}), peer):
                    return True
    return False


def test_only_the_heads_reach_prometheus_and_grafana():
    namespace, backends = monitoring_stack()
    monitoring = {"kubernetes.io/metadata.name": namespace}
    pods = namespace_pods()
    heads = {name for name, labels in pods.items() if labels.get("ray.io/node-type") == "head"}
    assert len(heads) == len(RAY_DOCS)
    for backend in backends.values():
        allowed = {
            name
            for name, labels in pods.items()
            if _egress_allowed(labels, monitoring, backend.pod_labels, backend.pod_port)
        }
        assert allowed == heads, f"{backend.service}: {sorted(allowed ^ heads)}"
        # Those pods' other ports stay closed, and so does a look-alike in another namespace.
        for labels in pods.values():
            assert not _egress_allowed(labels, monitoring, backend.pod_labels, 8080)
            other = {"kubernetes.io/metadata.name": "default"}
            assert not _egress_allowed(labels, other, backend.pod_labels, backend.pod_port)
