"""The cluster spec of every Ray CR (the dev RayCluster, the RayJobs' rayClusterSpec, the
RayService's rayClusterConfig): pinned to the Dockerfile's Ray on one image, token
authentication, autoscaling, hardened and sized pods, read-only root filesystems, metrics on
8080, each pod mounting only the storage it needs (Tune storage: the training job only)."""

from __future__ import annotations

import pytest
import yaml

from sparc_ray.registry.layout import CAPTURE_DIR, RECORDS_DIR
from tests.manifests.helpers import (
    CAPTURE_PVC,
    DOCS,
    KUBERAY,
    METRICS_PORT,
    MODEL_STORE_MOUNT,
    MODEL_STORE_PVC,
    PY_TAG,
    RAY_DOCS,
    RAY_UID,
    RAY_VERSION,
    SCORE_JOB,
    TUNE_STORAGE_MOUNT,
    TUNE_STORAGE_PVC,
    assert_hardened,
    assert_sized,
    cluster_spec,
    doc_id,
    doc_ids,
    only,
    pod_containers,
    pod_templates,
    ray_containers,
)


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_ray_version_and_images_pinned(src, doc):
    cluster = cluster_spec(doc)
    assert cluster["rayVersion"] == RAY_VERSION, f"{src}: rayVersion != Dockerfile's Ray"
    for role, tpl in pod_templates(doc):
        for c in tpl["spec"]["containers"]:
            assert c["image"].endswith(f":{RAY_VERSION}-{PY_TAG}"), f"{src} {role}: {c['image']}"


def test_every_ray_pod_runs_the_one_image_of_the_kustomization():
    images = {
        (doc_id(doc), role, c["name"]): c["image"]
        for _, doc in RAY_DOCS
        for role, tpl in pod_templates(doc)
        for c in pod_containers(tpl)
    }
    assert {doc_id(d) for _, d in RAY_DOCS} <= {k[0] for k in images}
    assert len(set(images.values())) == 1, images
    name, _, tag = next(iter(images.values())).partition(":")
    base = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    (entry,) = [i for i in base["images"] if i["name"] == name]
    assert entry.get("newTag", tag) == tag  # `kustomize edit set image` starts from here


# Clusters scaled by the Ray autoscaler; the scoring job's is fixed-size on purpose (its
# actor pool is sized once from the cluster's CPUs, see rayjob-score.yaml).
FIXED_SIZE = {f"RayJob/{SCORE_JOB}"}


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_ray_token_auth_and_autoscaling(src, doc):
    cluster = cluster_spec(doc)
    assert cluster["authOptions"]["mode"] == "token", src
    for g in cluster["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (src, g["groupName"])
        assert g["maxReplicas"] >= 1
    if doc_id(doc) in FIXED_SIZE:
        assert cluster["enableInTreeAutoscaling"] is False, src
        assert "autoscalerOptions" not in cluster, f"{src}: autoscalerOptions without autoscaler"
        for g in cluster["workerGroupSpecs"]:
            assert g["minReplicas"] == g["replicas"] == g["maxReplicas"], (src, g["groupName"])
    else:
        assert cluster["enableInTreeAutoscaling"] is True, src
        # Idle workers are removed after this many seconds (read by the Ray autoscaler).
        assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0, src
    if doc["kind"] == "RayService":
        assert any(g["maxReplicas"] > g["minReplicas"] for g in cluster["workerGroupSpecs"])


def _autoscaler(doc: dict) -> dict | None:
    """autoscalerOptions of a cluster that runs the Ray autoscaler sidecar, else None."""
    cluster = cluster_spec(doc)
    return cluster["autoscalerOptions"] if cluster.get("enableInTreeAutoscaling") else None


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_pods_hardened(src, doc):
    for role, tpl in pod_templates(doc):
        pod_sc = tpl["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, (src, role)
        assert pod_sc["runAsUser"] == RAY_UID, (src, role)
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", (src, role)
        assert not tpl["spec"].get("hostNetwork") and not tpl["spec"].get("hostPID")
        for c in tpl["spec"]["containers"] + tpl["spec"].get("initContainers", []):
            assert_hardened(f"{src} {role} {c['name']}", c["securityContext"])
    if _autoscaler(doc) is not None:
        assert_hardened(f"{src} autoscaler", _autoscaler(doc)["securityContext"])


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_every_container_has_requests_and_limits(src, doc):
    for role, tpl in pod_templates(doc):
        for c in tpl["spec"]["containers"]:
            assert_sized(f"{src} {role} {c['name']}", c["resources"])
    if _autoscaler(doc) is not None:
        assert_sized(f"{src} autoscaler", _autoscaler(doc)["resources"])


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_ray_nodes_export_metrics_on_8080(src, doc):
    cluster = cluster_spec(doc)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for g in groups:
        assert g["rayStartParams"].get("metrics-export-port") == str(METRICS_PORT), src
    for role, c in ray_containers(doc):
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        assert ports.get("metrics") == METRICS_PORT, f"{src} {role}: no port 8080 named metrics"


def test_the_pvcs_are_shared_across_nodes():
    pvcs = {d["metadata"]["name"]: d for src, d in DOCS if src == "kuberay/pvc.yaml"}
    assert set(pvcs) == {MODEL_STORE_PVC, TUNE_STORAGE_PVC, CAPTURE_PVC}
    for pvc in pvcs.values():
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def _storage_mounts(tpl: dict) -> dict[str, tuple[str, bool, str | None]]:
    """mountPath -> (claim, read-only, subPath) of the PVC mounts of a pod's Ray container."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in tpl["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    return {
        m["mountPath"]: (claims[m["name"]], bool(m.get("readOnly")), m.get("subPath"))
        for m in tpl["spec"]["containers"][0]["volumeMounts"]
        if m["name"] in claims
    }


def _capture_mount() -> str:
    (app,) = yaml.safe_load(only("RayService")["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["model_store"] == "model_store"  # resolves to MODEL_STORE_MOUNT
    return f"{MODEL_STORE_MOUNT}/{app['args']['model_name']}/{CAPTURE_DIR}"  # capture_uri: null


def _expected_storage(kind: str, name: str, role: str) -> dict[str, tuple[str, bool, str | None]]:
    """Who mounts what (docs/security.md): the Tune storage the training job only; versions
    read-only wherever nothing publishes; captures on their own volume, serving only (and
    the training head, read-only, for capture: retraining)."""
    store, capture = MODEL_STORE_MOUNT, _capture_mount()
    if kind == "RayService":  # versions read-only; the release records (RECORDS_DIR) read-write
        records = capture.removesuffix(CAPTURE_DIR) + RECORDS_DIR
        return {
            store: (MODEL_STORE_PVC, True, None),
            records: (MODEL_STORE_PVC, False, records.removeprefix(f"{store}/")),
            capture: (CAPTURE_PVC, False, None),
        }
    if kind == "RayCluster":  # dev: reads and serves, never publishes
        return {store: (MODEL_STORE_PVC, True, None)}
    if name == SCORE_JOB:  # versions read-only; results in _batches only
        return {
            store: (MODEL_STORE_PVC, True, None),
            "/home/ray/batches": (MODEL_STORE_PVC, False, "_batches"),
        }
    if role == "head":  # the training driver publishes and seals the experiment
        return {
            store: (MODEL_STORE_PVC, False, None),
            TUNE_STORAGE_MOUNT: (TUNE_STORAGE_PVC, False, None),
            capture: (CAPTURE_PVC, True, None),
        }
    return {TUNE_STORAGE_MOUNT: (TUNE_STORAGE_PVC, False, None)}  # trials: results only


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_each_pod_mounts_only_the_storage_it_needs(src, doc):
    for role, tpl in pod_templates(doc):
        if role == "submitter":
            assert "persistentVolumeClaim" not in str(tpl["spec"].get("volumes", [])), src
            continue
        expected = _expected_storage(doc["kind"], doc["metadata"]["name"], role)
        assert _storage_mounts(tpl) == expected, (src, role)


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=doc_ids(RAY_DOCS))
def test_root_filesystems_are_read_only_with_tmp_on_an_empty_dir(src, doc):
    containers = [
        (role, tpl, c) for role, tpl in pod_templates(doc) for c in tpl["spec"]["containers"]
    ]
    if (autoscaler := _autoscaler(doc)) is not None:  # KubeRay adds it to the head pod
        containers.append(
            ("autoscaler", cluster_spec(doc)["headGroupSpec"]["template"], autoscaler)
        )
    for role, tpl, c in containers:
        volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, (src, role)
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], (src, role)


def test_the_dev_cluster_can_neither_publish_nor_administer():
    dev = only("RayCluster")
    for role, c in ray_containers(dev):
        store = [m for m in c["volumeMounts"] if m["mountPath"] == MODEL_STORE_MOUNT]
        assert store and store[0]["readOnly"] is True, role
        env = {e["name"] for e in c.get("env", [])}
        assert not env & {"SPARC_ADMIN_TOKEN", "SPARC_FEEDBACK_TOKEN"}, role
