"""Head-node (GCS) fault tolerance: the RayService and the dev RayCluster keep their GCS state
in the Redis of kuberay/redis.yaml (address = its Service, password from the Secret that
Redis itself uses), with nothing KubeRay rejects; workers outlast a head restart; Redis is
pinned, hardened, sized, probed and keeps its data across restarts."""

from __future__ import annotations

import re

import pytest

from tests.manifests.helpers import (
    GCS_FT_DOCS,
    REDIS_PORT,
    assert_sized,
    cluster_spec,
    doc_ids,
    env_vars,
    every,
    ray_containers,
    redis_container,
    redis_deployment,
    redis_password_ref,
    redis_service,
    secret,
)

# Ray's default on the head (no env there): a head whose GCS is gone exits after this.
RAY_DEFAULT_GCS_RECONNECT_TIMEOUT_S = 60
# KubeRay rejects these next to gcsFaultToleranceOptions (ValidateRayClusterSpec) or derives
# them from it; set by hand they would also put the password in the manifest.
FT_ANNOTATIONS = {"ray.io/ft-enabled", "ray.io/external-storage-namespace"}
FT_HEAD_ENV = {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME"}
FT_HEAD_PARAMS = {"redis-password", "redis-username"}


def _head(doc: dict) -> tuple[dict, dict]:
    """(headGroupSpec, head Ray container)."""
    head = cluster_spec(doc)["headGroupSpec"]
    return head, head["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("src", "doc"), GCS_FT_DOCS, ids=doc_ids(GCS_FT_DOCS))
def test_gcs_fault_tolerance_uses_the_redis_service_and_the_secret(src, doc):
    ft = cluster_spec(doc)["gcsFaultToleranceOptions"]
    assert ft.get("backend", "redis") == "redis", src
    # Address: the Redis Service's DNS name and port.
    svc = redis_service()
    name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
    host, _, port = ft["redisAddress"].split("://")[-1].rpartition(":")
    assert host in {f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}, (
        f"{src}: redisAddress {ft['redisAddress']!r} is not the Service {ns}/{name}"
    )
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}, src
    # Password: from a Secret, never a literal; the same Secret key Redis itself uses.
    password = ft["redisPassword"]
    assert "value" not in password, f"{src}: literal Redis password"
    ref, redis_ref = password["valueFrom"]["secretKeyRef"], redis_password_ref()
    assert not ref.get("optional"), src
    assert (ref["name"], ref["key"]) == (redis_ref["name"], redis_ref["key"]), src
    assert ref["key"] in secret(ref["name"])["stringData"], src  # secret.example.yaml


@pytest.mark.parametrize(("src", "doc"), GCS_FT_DOCS, ids=doc_ids(GCS_FT_DOCS))
def test_gcs_fault_tolerance_has_nothing_kuberay_rejects(src, doc):
    annotations = doc["metadata"].get("annotations", {})
    assert not FT_ANNOTATIONS & set(annotations), f"{src}: old FT annotations with the new field"
    head, container = _head(doc)
    assert not FT_HEAD_PARAMS & set(head["rayStartParams"]), src
    assert not FT_HEAD_ENV & set(env_vars(container)), src
    if doc["kind"] == "RayService":
        # Each cluster of a NewCluster upgrade must keep its own key prefix (its UID).
        assert "externalStorageNamespace" not in cluster_spec(doc)["gcsFaultToleranceOptions"]


@pytest.mark.parametrize(("src", "doc"), GCS_FT_DOCS, ids=doc_ids(GCS_FT_DOCS))
def test_workers_outlast_a_head_restart(src, doc):
    _, head = _head(doc)
    head_timeout = int(
        env_vars(head)
        .get("RAY_gcs_rpc_server_reconnect_timeout_s", {})
        .get("value", RAY_DEFAULT_GCS_RECONNECT_TIMEOUT_S)
    )
    for role, c in ray_containers(doc):
        if role == "head":
            continue
        var = env_vars(c)["RAY_gcs_rpc_server_reconnect_timeout_s"]
        assert "valueFrom" not in var, (src, role)
        assert int(var["value"]) >= 300 and int(var["value"]) > head_timeout, (src, role)


def test_redis_secret_example_is_a_placeholder():
    ref = redis_password_ref()
    value = secret(ref["name"])["stringData"][ref["key"]]
    assert value.startswith("CHANGE-ME"), "example Redis password must be marked as such"


def test_redis_deployment_is_pinned_hardened_sized_and_probed():
    dep = redis_deployment()
    spec, tpl = dep["spec"], dep["spec"]["template"]
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"].items() <= tpl["metadata"]["labels"].items()
    c = redis_container()
    # A specific release, not a moving tag.
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-[a-z0-9.]+)?", c["image"]), c["image"]
    pod_sc = tpl["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert tpl["spec"]["automountServiceAccountToken"] is False
    assert not tpl["spec"].get("hostNetwork") and not tpl["spec"].get("hostPID")
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc.get("runAsUser", pod_sc["runAsUser"]) != 0
    assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert sc["readOnlyRootFilesystem"] is True
    assert_sized("redis", c["resources"])
    # Probes: an authenticated PING (redis-cli reads REDISCLI_AUTH from the env).
    assert env_vars(c)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == redis_password_ref()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = " ".join(c[probe]["exec"]["command"])
        assert "redis-cli" in cmd and "ping" in cmd and "PONG" in cmd, probe


def test_redis_keeps_its_data_across_pod_restarts():
    dep = redis_deployment()
    c = redis_container()
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == data_dir]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    (pvc,) = [d for d in every("PersistentVolumeClaim") if d["metadata"]["name"] == claim]
    if "ReadWriteOnce" in pvc["spec"]["accessModes"]:  # never two pods on one RWO volume
        assert dep["spec"]["strategy"]["type"] == "Recreate"


def test_redis_service_reaches_the_redis_port():
    svc = redis_service()
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    labels = redis_deployment()["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in redis_container()["ports"]}
    (port,) = svc["spec"]["ports"]
    target = port.get("targetPort", port["port"])
    assert ports.get(target, target) == REDIS_PORT == port["port"]
