"""Every document under kuberay/ is well formed, the ray.io manifests validate against the
KubeRay v1.7.0 CRD schemas in tests/data/kuberay-crds/ in a strict mode (unknown fields
fail, see its README), and so do the built-in kinds listed in BUILTIN_SCHEMAS against the
fields of their Kubernetes API types."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest

from tests.manifests.helpers import (
    CRD_SCHEMAS,
    DOCS,
    NAMESPACE,
    RAY_DOCS,
    ROOT,
    doc_ids,
    only,
)

CRD_DIR = ROOT / "tests" / "data" / "kuberay-crds"


CORE_KINDS = {
    "Namespace": "v1",
    "PersistentVolumeClaim": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "PodDisruptionBudget": "policy/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
# Core kinds that must carry a spec.
WITH_SPEC = {
    "PersistentVolumeClaim",
    "NetworkPolicy",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
}

# Built-in kinds checked as strictly as the CRDs: the fields of their Kubernetes API types
# (io.k8s.api.policy.v1.PodDisruptionBudgetSpec and io.k8s.apimachinery.pkg.apis.meta.v1.
# LabelSelector, Kubernetes 1.27+), closed like _strict does, and the API server's rules.
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_INT_OR_PERCENT = {
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]+%$"}]
}
BUILTIN_SCHEMAS = {
    "PodDisruptionBudget": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "policy/v1"},
            "kind": {"const": "PodDisruptionBudget"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                # Ours: a budget and a selector (policy/v1's empty selector is every pod).
                "required": ["selector"],
                "oneOf": [{"required": ["minAvailable"]}, {"required": ["maxUnavailable"]}],
                "properties": {
                    "minAvailable": _INT_OR_PERCENT,
                    "maxUnavailable": _INT_OR_PERCENT,
                    "selector": _LABEL_SELECTOR,
                    "unhealthyPodEvictionPolicy": {"enum": ["IfHealthyBudget", "AlwaysAllow"]},
                },
            },
        },
    },
}
BUILTIN_DOCS = [(src, d) for src, d in DOCS if d.get("kind") in BUILTIN_SCHEMAS]


def _strict(node, *, open_object: bool = False):
    """Copy of a CRD schema with additionalProperties: false on closed object schemas."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    props = node.get("properties")
    if isinstance(props, dict):
        out["properties"] = {k: _strict(v, open_object=(k == "metadata")) for k, v in props.items()}
        if (
            not open_object
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = _strict(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(node.get(key), list):
            out[key] = _strict(node[key])
    return out


_VALIDATORS: dict[str, jsonschema.Draft7Validator] = {}


def _schema_errors(doc: dict) -> list[str]:
    kind = doc["kind"]
    if kind not in _VALIDATORS:
        if kind in BUILTIN_SCHEMAS:
            schema = BUILTIN_SCHEMAS[kind]
        else:
            schema = _strict(json.loads((CRD_DIR / CRD_SCHEMAS[kind]).read_text()))
        _VALIDATORS[kind] = jsonschema.Draft7Validator(schema)
    errors = _VALIDATORS[kind].iter_errors(doc)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
    ]


def test_manifests_found():
    kinds = {d["kind"] for _, d in DOCS}
    assert {"RayCluster", "RayJob", "RayService"} <= kinds
    assert set(CORE_KINDS) <= kinds


@pytest.mark.parametrize(("src", "doc"), DOCS, ids=doc_ids(DOCS))
def test_manifest_well_formed(src, doc):
    kind = doc.get("kind")
    assert kind in CORE_KINDS or kind in CRD_SCHEMAS, f"{src}: unexpected kind {kind!r}"
    expected_api = "ray.io/v1" if kind in CRD_SCHEMAS else CORE_KINDS[kind]
    assert doc.get("apiVersion") == expected_api, src
    name = doc.get("metadata", {}).get("name")
    assert isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), src
    if kind == "Namespace":
        assert name == NAMESPACE
    else:
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{src}: {kind}/{name} namespace"
    if kind in CRD_SCHEMAS or kind in WITH_SPEC:
        assert isinstance(doc.get("spec"), dict), src


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_ray_manifest_matches_kuberay_crd_schema(src, doc):
    errors = _schema_errors(doc)
    assert not errors, f"{src} fails the strict KubeRay v1.7.0 schema:\n" + "\n".join(errors)


def test_strict_schema_rejects_unknown_fields():
    service = copy.deepcopy(only("RayService"))
    service["spec"]["serveConfigV3"] = service["spec"]["serveConfigV2"]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["imagePullPolicyy"] = "Always"
    errors = "\n".join(_schema_errors(service))
    assert "serveConfigV3" in errors
    assert "imagePullPolicyy" in errors
    # metadata stays open
    service = copy.deepcopy(only("RayService"))
    service["metadata"]["annotations"] = {"example.com/anything": "x"}
    assert not _schema_errors(service)


@pytest.mark.parametrize(("src", "doc"), BUILTIN_DOCS, ids=doc_ids(BUILTIN_DOCS))
def test_builtin_manifest_matches_its_api_type(src, doc):
    errors = _schema_errors(doc)
    assert not errors, f"{src} fails the strict {doc['kind']} schema:\n" + "\n".join(errors)


def test_builtin_schemas_cover_a_manifest_each_and_reject_what_the_api_would():
    assert {d["kind"] for _, d in BUILTIN_DOCS} == set(BUILTIN_SCHEMAS)
    pdb = copy.deepcopy(only("PodDisruptionBudget"))
    pdb["spec"]["maxUnavaliable"] = 1  # a typo the API server would drop silently
    pdb["spec"]["selector"]["matchExpressions"] = [{"key": "a", "operator": "in"}]
    errors = "\n".join(_schema_errors(pdb))
    assert "maxUnavaliable" in errors and "'in' is not one of" in errors
    both = copy.deepcopy(only("PodDisruptionBudget"))
    both["spec"] |= {"minAvailable": 1, "maxUnavailable": 1}  # the API refuses both
    assert _schema_errors(both)
    assert not _schema_errors(only("PodDisruptionBudget"))
