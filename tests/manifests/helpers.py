"""What the manifest tests share: every document under kuberay/ (loaded once), the names,
paths and ports the manifests must agree on, and accessors for the parts of a Ray CR
(cluster spec, pod templates, containers, mounts, secrets) and of kuberay/redis.yaml.

No cluster and no Ray instance is needed by any test in tests/manifests/."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
MONITORING = KUBERAY / "monitoring"


# The Ray version everything is pinned to: the Dockerfile's base image tag.
PY_TAG = "py311"
_BASE = re.search(
    r"^FROM\s+rayproject/ray:(\d+\.\d+\.\d+)-" + PY_TAG + r"\s*$",
    (ROOT / "Dockerfile").read_text(),
    re.MULTILINE,
)
RAY_VERSION = _BASE.group(1) if _BASE else "<no FROM rayproject/ray:X.Y.Z-py311 in Dockerfile>"
NAMESPACE = "sparc-ray"
MODEL_STORE_MOUNT = "/home/ray/model_store"
# Tune's experiments: their own PVC, mounted by the training RayJob only (docs/security.md).
TUNE_STORAGE_MOUNT = "/home/ray/tune_storage"
# kuberay/pvc.yaml's claims: the model store, the Tune storage, the captured traffic.
MODEL_STORE_PVC, TUNE_STORAGE_PVC, CAPTURE_PVC = (
    "sparc-model-store",
    "sparc-tune-storage",
    "sparc-capture",
)
# The RayJobs (metadata.name) and the scripts their entrypoints run.
TRAIN_JOB, SCORE_JOB = "sparc-train", "sparc-score"
JOB_SCRIPTS = {TRAIN_JOB: "jobs/train.py", SCORE_JOB: "jobs/score.py"}
# Ed25519 signing pair: the private key Secret (training head only) and the public ConfigMap.
SIGNING_KEY_SECRET = "sparc-model-signing-key"
PUBLIC_KEY_CONFIGMAP = "sparc-model-signing-public"
KEYS_DIR = "/home/ray/keys"
RAY_UID = 1000
SERVE_PORT = 8000
REDIS_PORT = 6379
DASHBOARD_PORT = 8265
METRICS_PORT = 8080


CRD_SCHEMAS = {
    "RayCluster": "raycluster-v1.schema.json",
    "RayJob": "rayjob-v1.schema.json",
    "RayService": "rayservice-v1.schema.json",
}


def manifest_files() -> list[Path]:
    files = sorted(KUBERAY.rglob("*.yaml"))
    return [p for p in files if p.name != "kustomization.yaml" and "tests" not in p.parts[-2:]]


def load_docs() -> list[tuple[str, dict]]:
    docs = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((str(path.relative_to(ROOT)), doc))
    return docs


DOCS = load_docs()
RAY_DOCS = [(src, d) for src, d in DOCS if str(d.get("apiVersion", "")).startswith("ray.io/")]


def doc_ids(docs: list[tuple[str, dict]]) -> list[str]:
    return [f"{src}:{d.get('kind')}/{d.get('metadata', {}).get('name')}" for src, d in docs]


def only(kind: str) -> dict:
    found = [d for _, d in DOCS if d.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind} under kuberay/, found {len(found)}"
    return found[0]


def every(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d.get("kind") == kind]


def named(kind: str, name: str) -> dict:
    found = [d for d in every(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} under kuberay/, found {len(found)}"
    return found[0]


def rayjob(name: str) -> dict:
    return named("RayJob", name)


def doc_id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {
        "RayCluster": lambda: spec,
        "RayJob": lambda: spec["rayClusterSpec"],
        "RayService": lambda: spec["rayClusterConfig"],
    }[doc["kind"]]()


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(role, pod template) of the head, every worker group and a RayJob's submitter."""
    cluster = cluster_spec(doc)
    out = [("head", cluster["headGroupSpec"]["template"])]
    out += [(f"worker/{g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


def ray_containers(doc: dict) -> list[tuple[str, dict]]:
    """The Ray container (index 0, as KubeRay uses it) of head and worker pods."""
    return [
        (role, tpl["spec"]["containers"][0])
        for role, tpl in pod_templates(doc)
        if role != "submitter"
    ]


def pod_containers(tpl: dict) -> list[dict]:
    return tpl["spec"]["containers"] + tpl["spec"].get("initContainers", [])


def serve_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def entrypoint(job: str = TRAIN_JOB) -> list[str]:
    return shlex.split(rayjob(job)["spec"]["entrypoint"])


def flag_values(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, tok in enumerate(argv):
        if tok.startswith("--"):
            flag, _, val = tok.partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[flag] = val or (nxt if nxt is not None and not nxt.startswith("--") else None)
    return out


def secret(name: str) -> dict:
    found = [d for d in every("Secret") if d["metadata"]["name"] == name]
    assert found, f"no example Secret {name} in kuberay/secret.example.yaml"
    return found[0]


def configmap(name: str) -> dict:
    found = [d for d in every("ConfigMap") if d["metadata"]["name"] == name]
    assert found, f"no example ConfigMap {name} in kuberay/secret.example.yaml"
    return found[0]


def secret_names(tpl: dict) -> set[str]:
    """Secrets a pod template refers to: volumes (plain and projected), env and envFrom."""
    names = set()
    for v in tpl["spec"].get("volumes", []):
        if "secret" in v:
            names.add(v["secret"]["secretName"])
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                names.add(src["secret"]["name"])
    for c in pod_containers(tpl):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for e in c.get("envFrom", []):
            if "secretRef" in e:
                names.add(e["secretRef"]["name"])
    return names


def mounts(c: dict, volumes: dict, path: str) -> list[dict]:
    return [
        volumes[m["name"]] | {"mount": m}
        for m in c.get("volumeMounts", [])
        if m["mountPath"] == path
    ]


def env_vars(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def assert_hardened(where: str, sc: dict) -> None:
    assert sc.get("allowPrivilegeEscalation") is False, where
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
    assert not sc.get("capabilities", {}).get("add"), where
    assert not sc.get("privileged"), where
    assert sc.get("runAsNonRoot") is True, where
    assert sc.get("runAsUser", RAY_UID) == RAY_UID, where
    assert sc.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault", where


def assert_sized(where: str, resources: dict) -> None:
    for bound in ("requests", "limits"):
        for res in ("cpu", "memory"):
            assert res in resources.get(bound, {}), f"{where}: no {bound}.{res}"


# Clusters whose GCS keeps its state in Redis, and those that deliberately do not (the
# RayJobs: a cluster lives for one job; its driver dies with the head anyway).
GCS_FT_KINDS = ("RayCluster", "RayService")
GCS_FT_DOCS = [(src, d) for src, d in RAY_DOCS if d["kind"] in GCS_FT_KINDS]


def redis_deployment() -> dict:
    (dep,) = [d for d in every("Deployment") if d["metadata"]["name"] == "sparc-redis"]
    return dep


def redis_service() -> dict:
    (svc,) = [d for d in every("Service") if d["metadata"]["name"] == "sparc-redis"]
    return svc


def redis_pod_selector() -> dict:
    return redis_deployment()["spec"]["selector"]["matchLabels"]


def redis_container() -> dict:
    (c,) = redis_deployment()["spec"]["template"]["spec"]["containers"]
    return c


def redis_password_ref() -> dict:
    """The secretKeyRef that sets the Redis container's password (`--requirepass $(VAR)`)."""
    c = redis_container()
    args = c["args"]
    var = re.fullmatch(r"\$\((\w+)\)", args[args.index("--requirepass") + 1])
    assert var, f"--requirepass must take the password from the env, not {args!r}"
    return env_vars(c)[var.group(1)]["valueFrom"]["secretKeyRef"]
