"""Offline checks of the deployment files: kuberay/, kuberay/monitoring/, Dockerfile.

No cluster and no Ray instance is needed:
* ray.io manifests validate against the KubeRay v1.7.0 CRD schemas in
  tests/data/kuberay-crds/ in a strict mode (unknown fields fail, see its README);
* RayService.serveConfigV2 equals serve_config.yaml (and both pass ServeDeploySchema);
* the training RayJob runs jobs/train.py and the scoring RayJob jobs/score.py, with flags
  their argparse knows, on the model name and store that serving uses; scoring gets the
  public key (ConfigMap, read-only) and never the private signing key;
* pods are hardened, sized, token-authenticated and pinned to the Dockerfile's Ray
  (same minor release as the installed ray), all on one image;
* network policies expose only Serve's port 8000 to clients;
* the base kustomization and the pinned overlay list the same files, and both build;
* head-node (GCS) fault tolerance: the RayService and the dev RayCluster keep their GCS
  state in the Redis of kuberay/redis.yaml (address = its Service, password from the
  Secret that Redis itself uses), workers outlast a head restart, and only the GCS-FT heads
  reach Redis through the network policies;
* the PrometheusRule passes `promtool check rules` and the promtool unit tests in
  kuberay/monitoring/tests/alerts.test.yaml (skipped, loudly, without promtool);
* PromQL in rules, rule tests and the Grafana dashboard only uses metric names listed in
  tests/data/live_metric_names.txt or Ray Serve built-ins (ray_serve_*).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "kuberay"
MONITORING = KUBERAY / "monitoring"
PROMTOOL_TESTS = MONITORING / "tests" / "alerts.test.yaml"
CRD_DIR = ROOT / "tests" / "data" / "kuberay-crds"
LIVE_METRICS = ROOT / "tests" / "data" / "live_metric_names.txt"

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
# Ray built-in series the dashboard may use besides our own (live_metric_names.txt).
BUILTIN_METRIC = re.compile(r"ray_serve_[a-zA-Z0-9_]+")

CRD_SCHEMAS = {
    "RayCluster": "raycluster-v1.schema.json",
    "RayJob": "rayjob-v1.schema.json",
    "RayService": "rayservice-v1.schema.json",
}
CORE_KINDS = {
    "Namespace": "v1",
    "PersistentVolumeClaim": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
# Core kinds that must carry a spec.
WITH_SPEC = {"PersistentVolumeClaim", "NetworkPolicy", "Deployment", "Service"}
# The seed's ML alerts: (threshold comparison, for, severity).
SEED_ALERTS = {
    "ModelPredictionLatencyHigh": ("> 1.0", "2m", "warning"),
    "ModelErrorRateHigh": ("> 0.05", "1m", "critical"),
    "ModelDriftDetected": ("> 0.1", "5m", "warning"),
    "FeatureDriftDetected": ("> 0.15", "5m", "warning"),
    "ModelAccuracyDegraded": ("< 0.85", "10m", "critical"),
}
ALERTS = {
    **SEED_ALERTS,
    "CanaryRolledBack": ("> 0", "0m", "warning"),
    "ModelClientErrorRateHigh": ("> 0.25", "10m", "warning"),
    "TrafficCaptureDropping": ("> 0", "10m", "warning"),
}


# ----------------------------------------------------------------------------- loading


def _manifest_files() -> list[Path]:
    files = sorted(KUBERAY.rglob("*.yaml"))
    return [p for p in files if p.name != "kustomization.yaml" and "tests" not in p.parts[-2:]]


def _load_docs() -> list[tuple[str, dict]]:
    docs = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((str(path.relative_to(ROOT)), doc))
    return docs


DOCS = _load_docs()
RAY_DOCS = [(src, d) for src, d in DOCS if str(d.get("apiVersion", "")).startswith("ray.io/")]


def _ids(docs: list[tuple[str, dict]]) -> list[str]:
    return [f"{src}:{d.get('kind')}/{d.get('metadata', {}).get('name')}" for src, d in docs]


def _one(kind: str) -> dict:
    found = [d for _, d in DOCS if d.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind} under kuberay/, found {len(found)}"
    return found[0]


def _all(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d.get("kind") == kind]


def _named(kind: str, name: str) -> dict:
    found = [d for d in _all(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} under kuberay/, found {len(found)}"
    return found[0]


def _job(name: str) -> dict:
    return _named("RayJob", name)


def _doc_id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {
        "RayCluster": lambda: spec,
        "RayJob": lambda: spec["rayClusterSpec"],
        "RayService": lambda: spec["rayClusterConfig"],
    }[doc["kind"]]()


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(role, pod template) of the head, every worker group and a RayJob's submitter."""
    cluster = _cluster_spec(doc)
    out = [("head", cluster["headGroupSpec"]["template"])]
    out += [(f"worker/{g['groupName']}", g["template"]) for g in cluster["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        out.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return out


def _ray_containers(doc: dict) -> list[tuple[str, dict]]:
    """The Ray container (index 0, as KubeRay uses it) of head and worker pods."""
    return [
        (role, tpl["spec"]["containers"][0])
        for role, tpl in _pod_templates(doc)
        if role != "submitter"
    ]


def _serve_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def _live_metric_names() -> set[str]:
    lines = LIVE_METRICS.read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")}


def _rule_groups() -> dict:
    return _one("PrometheusRule")["spec"]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "!!! promtool NOT INSTALLED: PrometheusRule checks SKIPPED !!! "
            "Run `bash .ci/install-apt.sh promtool prometheus`."
        )
    return path


# ------------------------------------------------------------------- strict CRD schemas


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
        schema = json.loads((CRD_DIR / CRD_SCHEMAS[kind]).read_text())
        _VALIDATORS[kind] = jsonschema.Draft7Validator(_strict(schema))
    errors = _VALIDATORS[kind].iter_errors(doc)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
    ]


# ------------------------------------------------------------------------ PromQL names

_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def _metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL (or Grafana label_values) expression."""
    names = set()
    for m in re.finditer(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,", expr):
        names.add(m.group(1))
    s = re.sub(r"label_values\([^)]*\)", " ", expr)
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', s)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", s):
        if m.group(1).lower() not in _PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def _dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _dashboard_exprs() -> list[str]:
    dash = _dashboard()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


# =============================================================================== tests


def test_manifests_found():
    kinds = {d["kind"] for _, d in DOCS}
    assert {"RayCluster", "RayJob", "RayService"} <= kinds
    assert set(CORE_KINDS) <= kinds


@pytest.mark.parametrize(("src", "doc"), DOCS, ids=_ids(DOCS))
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


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_ray_manifest_matches_kuberay_crd_schema(src, doc):
    errors = _schema_errors(doc)
    assert not errors, f"{src} fails the strict KubeRay v1.7.0 schema:\n" + "\n".join(errors)


def test_strict_schema_rejects_unknown_fields():
    service = copy.deepcopy(_one("RayService"))
    service["spec"]["serveConfigV3"] = service["spec"]["serveConfigV2"]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["imagePullPolicyy"] = "Always"
    errors = "\n".join(_schema_errors(service))
    assert "serveConfigV3" in errors
    assert "imagePullPolicyy" in errors
    # metadata stays open
    service = copy.deepcopy(_one("RayService"))
    service["metadata"]["annotations"] = {"example.com/anything": "x"}
    assert not _schema_errors(service)


# ------------------------------------------------------------------------ serve config


def test_serve_config_v2_equals_serve_config_yaml():
    embedded = yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"])
    reference = _serve_config()
    assert embedded["applications"] == reference["applications"], (
        "kuberay/rayservice.yaml serveConfigV2.applications differs from serve_config.yaml"
    )
    for key in set(embedded) - {"applications"}:
        assert key in reference and embedded[key] == reference[key], (
            f"serveConfigV2.{key} differs from serve_config.yaml"
        )


def test_serve_configs_pass_ray_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(_serve_config())
    ServeDeploySchema.model_validate(yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"]))


def test_serve_app_reads_model_store_from_the_mounted_volume():
    # Ray workers run in the image WORKDIR /home/ray (see Dockerfile), so a relative
    # model_store must be the mount point's name there.
    for app in yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"])["applications"]:
        store = app["args"]["model_store"]
        resolved = store if store.startswith("/") else f"/home/ray/{store}"
        assert "://" in store or resolved.rstrip("/") == MODEL_STORE_MOUNT, store


# ---------------------------------------------------------------------------- RayJob


def _entrypoint(job: str = TRAIN_JOB) -> list[str]:
    return shlex.split(_job(job)["spec"]["entrypoint"])


def _flag_values(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, tok in enumerate(argv):
        if tok.startswith("--"):
            flag, _, val = tok.partition("=")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[flag] = val or (nxt if nxt is not None and not nxt.startswith("--") else None)
    return out


def test_the_rayjobs_found():
    assert sorted(d["metadata"]["name"] for d in _all("RayJob")) == sorted(JOB_SCRIPTS)


def test_rayjob_entrypoint_runs_train_script():
    argv = _entrypoint()
    assert argv[:2] == ["python", "jobs/train.py"], argv
    assert (ROOT / "jobs" / "train.py").is_file(), "jobs/train.py is missing"
    flags = _flag_values(argv)
    assert (ROOT / flags["--config"]).is_file(), f"--config {flags['--config']} does not exist"
    assert flags["--store"] == MODEL_STORE_MOUNT
    assert flags["--storage-path"].startswith(MODEL_STORE_MOUNT + "/")


@pytest.mark.parametrize("job", sorted(JOB_SCRIPTS))
def test_rayjob_entrypoint_flags_exist_in_its_cli(job):
    script = ROOT / JOB_SCRIPTS[job]
    if not script.is_file():
        pytest.skip(f"{JOB_SCRIPTS[job]} not written yet (the entrypoint tests fail)")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in _flag_values(_entrypoint(job)):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", proc.stdout), (
            f"{flag} from the {job} entrypoint is not an option of {script.name}:\n{proc.stdout}"
        )


@pytest.mark.parametrize("job", sorted(JOB_SCRIPTS))
def test_rayjob_lifecycle(job):
    spec = _job(job)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert spec.get("activeDeadlineSeconds", 1) > 0
    # A retry on a new cluster is an explicit re-run (train: --resume; score: a bad input,
    # model or key fails the same way again).
    assert spec.get("backoffLimit", 0) == 0


def _model_name() -> str:
    """The registry model name training publishes (its --config) and serving loads."""
    flags = _flag_values(_entrypoint(TRAIN_JOB))
    name = flags.get("--name") or yaml.safe_load((ROOT / flags["--config"]).read_text())["name"]
    (args,) = [app["args"] for app in _serve_config()["applications"]]
    assert args["model_name"] == name, "serve_config.yaml serves another model than training"
    return name


def test_score_job_runs_score_script_on_the_served_model_and_store():
    argv = _entrypoint(SCORE_JOB)
    assert argv[:2] == ["python", "jobs/score.py"], argv
    assert (ROOT / "jobs" / "score.py").is_file(), "jobs/score.py is missing"
    flags = _flag_values(argv)
    for flag in ("--data", "--name", "--store", "--out", "--public-key"):
        assert flags.get(flag), f"the scoring entrypoint has no {flag} value"
    # Same model and registry as training publishes to and the RayService serves.
    assert flags["--name"] == _model_name()
    assert flags["--store"] == _flag_values(_entrypoint(TRAIN_JOB))["--store"]
    assert flags["--store"] == MODEL_STORE_MOUNT  # = serve_config's model_store, resolved
    # Input and results on the mounted PVC (or an object store), outside the model's
    # registry directory; results never overwrite the input.
    model_dir = f"{flags['--store']}/{flags['--name']}"
    for flag in ("--data", "--out"):
        value = flags[flag]
        assert "://" in value or value.startswith(MODEL_STORE_MOUNT + "/"), (flag, value)
        assert not value.startswith(model_dir + "/"), (flag, value)
    assert flags["--out"] != flags["--data"]
    # jobs/score.py refuses an existing --out: each run needs a new one (submitter's shell).
    assert "$(date" in flags["--out"], "a fixed --out lets the job run only once"


def _head_template(doc: dict) -> dict:
    return _cluster_spec(doc)["headGroupSpec"]["template"]


def test_score_job_reads_the_public_key_from_the_configmap_read_only():
    flags = _flag_values(_entrypoint(SCORE_JOB))
    key_dir, key_file = flags["--public-key"].rsplit("/", 1)
    assert key_dir == KEYS_DIR and key_file == "model_signing.pub"
    # The driver (head) reads the key file; actors get its bytes from the driver.
    tpl = _head_template(_job(SCORE_JOB))
    volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
    (key,) = _mounts(tpl["spec"]["containers"][0], volumes, key_dir)
    assert key["configMap"]["name"] == PUBLIC_KEY_CONFIGMAP
    assert key["mount"]["readOnly"] is True
    assert key_file in _configmap(PUBLIC_KEY_CONFIGMAP)["data"]
    assert key["configMap"].get("items") is None or key_file in {
        i["path"] for i in key["configMap"]["items"]
    }


def _secret_names(tpl: dict) -> set[str]:
    """Secrets a pod template refers to: volumes (plain and projected), env and envFrom."""
    names = set()
    for v in tpl["spec"].get("volumes", []):
        if "secret" in v:
            names.add(v["secret"]["secretName"])
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                names.add(src["secret"]["name"])
    for c in _pod_containers(tpl):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for e in c.get("envFrom", []):
            if "secretRef" in e:
                names.add(e["secretRef"]["name"])
    return names


def test_score_job_never_sees_the_private_signing_key():
    doc = _job(SCORE_JOB)
    for role, tpl in _pod_templates(doc):
        assert SIGNING_KEY_SECRET not in _secret_names(tpl), role
        volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
        for c in _pod_containers(tpl):
            for key in _mounts(c, volumes, KEYS_DIR):
                assert "secret" not in key, (role, c["name"])
    # ... nor through the entrypoint.
    assert "--signing-key" not in _flag_values(_entrypoint(SCORE_JOB))
    assert SIGNING_KEY_SECRET not in yaml.safe_dump(doc["spec"])


def test_score_job_cluster_is_fixed_size_and_leaves_the_head_to_the_driver():
    from sparc_ray.batch.job import READ_CPUS, WRITE_CPUS

    cluster = _cluster_spec(_job(SCORE_JOB))
    # The actor pool is sized once from the cluster's CPUs, when all workers are up.
    assert cluster["enableInTreeAutoscaling"] is False
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    cpus = 0.0
    for g in cluster["workerGroupSpecs"]:
        assert g["minReplicas"] == g["replicas"] == g["maxReplicas"] >= 1, g["groupName"]
        (c,) = g["template"]["spec"]["containers"]
        res = c["resources"]
        assert res["requests"]["cpu"] == res["limits"]["cpu"], g["groupName"]
        assert res["requests"]["memory"] == res["limits"]["memory"], g["groupName"]
        assert "num-cpus" not in g["rayStartParams"], g["groupName"]  # Ray uses the limit
        cpus += g["replicas"] * _cpus(res["limits"]["cpu"])
    # Reading and writing take READ_CPUS + WRITE_CPUS; at least one CPU left for actors.
    assert cpus - READ_CPUS - WRITE_CPUS >= 1, cpus


def _cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# ------------------------------------------------------------------- Ray cluster specs


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_ray_version_and_images_pinned(src, doc):
    cluster = _cluster_spec(doc)
    assert cluster["rayVersion"] == RAY_VERSION, f"{src}: rayVersion != Dockerfile's Ray"
    for role, tpl in _pod_templates(doc):
        for c in tpl["spec"]["containers"]:
            assert c["image"].endswith(f":{RAY_VERSION}-{PY_TAG}"), f"{src} {role}: {c['image']}"


def test_every_ray_pod_runs_the_one_image_of_the_kustomization():
    images = {
        (_doc_id(doc), role, c["name"]): c["image"]
        for _, doc in RAY_DOCS
        for role, tpl in _pod_templates(doc)
        for c in _pod_containers(tpl)
    }
    assert {_doc_id(d) for _, d in RAY_DOCS} <= {k[0] for k in images}
    assert len(set(images.values())) == 1, images
    name, _, tag = next(iter(images.values())).partition(":")
    base = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    (entry,) = [i for i in base["images"] if i["name"] == name]
    assert entry.get("newTag", tag) == tag  # `kustomize edit set image` starts from here


# Clusters scaled by the Ray autoscaler; the scoring job's is fixed-size on purpose (its
# actor pool is sized once from the cluster's CPUs, see rayjob-score.yaml).
FIXED_SIZE = {f"RayJob/{SCORE_JOB}"}


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_ray_token_auth_and_autoscaling(src, doc):
    cluster = _cluster_spec(doc)
    assert cluster["authOptions"]["mode"] == "token", src
    for g in cluster["workerGroupSpecs"]:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (src, g["groupName"])
        assert g["maxReplicas"] >= 1
    if _doc_id(doc) in FIXED_SIZE:
        assert cluster["enableInTreeAutoscaling"] is False, src
        assert "autoscalerOptions" not in cluster, f"{src}: autoscalerOptions without autoscaler"
        for g in cluster["workerGroupSpecs"]:
            assert g["minReplicas"] == g["replicas"] == g["maxReplicas"], (src, g["groupName"])
    else:
        assert cluster["enableInTreeAutoscaling"] is True, src
    if doc["kind"] == "RayService":
        assert any(g["maxReplicas"] > g["minReplicas"] for g in cluster["workerGroupSpecs"])


def _autoscaler(doc: dict) -> dict | None:
    """autoscalerOptions of a cluster that runs the Ray autoscaler sidecar, else None."""
    cluster = _cluster_spec(doc)
    return cluster["autoscalerOptions"] if cluster.get("enableInTreeAutoscaling") else None


def _assert_hardened(where: str, sc: dict) -> None:
    assert sc.get("allowPrivilegeEscalation") is False, where
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
    assert not sc.get("capabilities", {}).get("add"), where
    assert not sc.get("privileged"), where
    assert sc.get("runAsNonRoot") is True, where
    assert sc.get("runAsUser", RAY_UID) == RAY_UID, where
    assert sc.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault", where


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_pods_hardened(src, doc):
    for role, tpl in _pod_templates(doc):
        pod_sc = tpl["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, (src, role)
        assert pod_sc["runAsUser"] == RAY_UID, (src, role)
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", (src, role)
        assert not tpl["spec"].get("hostNetwork") and not tpl["spec"].get("hostPID")
        for c in tpl["spec"]["containers"] + tpl["spec"].get("initContainers", []):
            _assert_hardened(f"{src} {role} {c['name']}", c["securityContext"])
    if _autoscaler(doc) is not None:
        _assert_hardened(f"{src} autoscaler", _autoscaler(doc)["securityContext"])


def _assert_sized(where: str, resources: dict) -> None:
    for bound in ("requests", "limits"):
        for res in ("cpu", "memory"):
            assert res in resources.get(bound, {}), f"{where}: no {bound}.{res}"


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_every_container_has_requests_and_limits(src, doc):
    for role, tpl in _pod_templates(doc):
        for c in tpl["spec"]["containers"]:
            _assert_sized(f"{src} {role} {c['name']}", c["resources"])
    if _autoscaler(doc) is not None:
        _assert_sized(f"{src} autoscaler", _autoscaler(doc)["resources"])


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_ray_nodes_export_metrics_on_8080(src, doc):
    cluster = _cluster_spec(doc)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for g in groups:
        assert g["rayStartParams"].get("metrics-export-port") == str(METRICS_PORT), src
    for role, c in _ray_containers(doc):
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        assert ports.get("metrics") == METRICS_PORT, f"{src} {role}: no port 8080 named metrics"


def _pvc_name() -> str:
    # The model store (kuberay/pvc.yaml); redis.yaml has its own claim for Redis's data.
    (pvc,) = [d for src, d in DOCS if src == "kuberay/pvc.yaml"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    return pvc["metadata"]["name"]


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_model_store_pvc_mounted_on_every_ray_node(src, doc):
    claim = _pvc_name()
    for role, tpl in _pod_templates(doc):
        if role == "submitter":
            continue
        volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
        mounts = tpl["spec"]["containers"][0]["volumeMounts"]
        store = [m for m in mounts if m["mountPath"] == MODEL_STORE_MOUNT]
        assert len(store) == 1, f"{src} {role}: model store not mounted"
        vol = volumes[store[0]["name"]]
        assert vol["persistentVolumeClaim"]["claimName"] == claim, (src, role)
        if doc["kind"] in ("RayJob", "RayService"):
            # Tune trials and the driver publish; scoring writes its results (--out); the
            # Serve app writes the alias and release records (/reload-model, the release
            # policy's decisions) on any node.
            assert not store[0].get("readOnly"), (src, role)


def _secret(name: str) -> dict:
    found = [d for d in _all("Secret") if d["metadata"]["name"] == name]
    assert found, f"no example Secret {name} in kuberay/secret.example.yaml"
    return found[0]


def _configmap(name: str) -> dict:
    found = [d for d in _all("ConfigMap") if d["metadata"]["name"] == name]
    assert found, f"no example ConfigMap {name} in kuberay/secret.example.yaml"
    return found[0]


def test_secrets_referenced_consistently():
    (args,) = [app["args"] for app in _serve_config()["applications"]]
    assert args["admin_token_env"] == "SPARC_ADMIN_TOKEN"
    assert args["feedback_token_env"] == "SPARC_FEEDBACK_TOKEN"
    for _, doc in RAY_DOCS:
        auth = _cluster_spec(doc)["authOptions"]
        if "secretName" in auth:
            assert "auth_token" in _secret(auth["secretName"])["stringData"]
    refs = set()
    for role, c in _ray_containers(_one("RayService")):
        env = {e["name"]: e for e in c.get("env", [])}
        for var in ("SPARC_ADMIN_TOKEN", "SPARC_FEEDBACK_TOKEN"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["key"] in _secret(ref["name"])["stringData"], role
            refs.add((var, ref["name"]))
    assert len({name for _, name in refs}) == 2, refs  # one Secret per token


def _mounts(c: dict, volumes: dict, path: str) -> list[dict]:
    return [
        volumes[m["name"]] | {"mount": m}
        for m in c.get("volumeMounts", [])
        if m["mountPath"] == path
    ]


def test_signing_key_reaches_only_the_training_driver_and_the_public_key_the_service():
    (args,) = [app["args"] for app in _serve_config()["applications"]]
    assert args["public_key"] == "keys/model_signing.pub"  # relative: /home/ray/keys/...
    flags = _flag_values(_entrypoint())
    assert flags["--signing-key"] == f"{KEYS_DIR}/model_signing.key"
    for src, doc in RAY_DOCS:
        for role, tpl in _pod_templates(doc):
            volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
            for c in tpl["spec"]["containers"]:
                keys = _mounts(c, volumes, KEYS_DIR)
                if _doc_id(doc) == f"RayJob/{TRAIN_JOB}" and role == "head":
                    (key,) = keys
                    assert key["secret"]["secretName"] == SIGNING_KEY_SECRET
                    assert key["secret"]["defaultMode"] == 0o400 and key["mount"]["readOnly"]
                    assert "model_signing.key" in _secret(SIGNING_KEY_SECRET)["stringData"]
                elif doc["kind"] == "RayService" or (
                    _doc_id(doc) == f"RayJob/{SCORE_JOB}" and role == "head"
                ):  # the Serve replicas, the scoring driver: the public key, read-only
                    (key,) = keys
                    assert key["configMap"]["name"] == PUBLIC_KEY_CONFIGMAP
                    assert key["mount"]["readOnly"], (src, role)
                else:  # RayJob workers and submitters, the dev cluster: no key at all
                    assert not keys, (src, role)
                if _doc_id(doc) != f"RayJob/{TRAIN_JOB}" or role != "head":
                    assert SIGNING_KEY_SECRET not in _secret_names(tpl), (src, role)


def test_each_cluster_has_its_own_ray_token():
    # A named Secret per long-lived cluster (secret.example.yaml, created by hand). Without
    # secretName KubeRay generates one per RayCluster (the scoring job: a new token per run).
    auth = {_doc_id(doc): _cluster_spec(doc)["authOptions"] for _, doc in RAY_DOCS}
    names = [a["secretName"] for a in auth.values() if "secretName" in a]
    assert len(names) == len(set(names)) == 3, names
    for name in names:
        assert "auth_token" in _secret(name)["stringData"], name
    assert "secretName" not in auth[f"RayJob/{SCORE_JOB}"]


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
def test_root_filesystems_are_read_only_with_tmp_on_an_empty_dir(src, doc):
    for role, tpl in _pod_templates(doc):
        volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
        for c in tpl["spec"]["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (src, role)
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], (src, role)


def test_the_dev_cluster_can_neither_publish_nor_administer():
    dev = _one("RayCluster")
    for role, c in _ray_containers(dev):
        store = [m for m in c["volumeMounts"] if m["mountPath"] == MODEL_STORE_MOUNT]
        assert store and store[0]["readOnly"] is True, role
        env = {e["name"] for e in c.get("env", [])}
        assert not env & {"SPARC_ADMIN_TOKEN", "SPARC_FEEDBACK_TOKEN"}, role


# --------------------------------------------------------------------- network policy


def _pod_labels() -> dict[str, dict]:
    """instance label -> labels of the pod templates carrying it."""
    out = {}
    for _, doc in RAY_DOCS:
        for _, tpl in _pod_templates(doc):
            labels = tpl["metadata"]["labels"]
            out[labels["app.kubernetes.io/instance"]] = labels
    return out


def _ports(rule: dict) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def test_network_policies_expose_only_serve_port():
    policies = _all("NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "Ingress" in p["spec"]["policyTypes"]
        and not p["spec"].get("ingress")
    ]
    assert deny, "no default-deny ingress policy"
    instances = _pod_labels()
    serve_instance = _one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"][
        "metadata"
    ]["labels"]["app.kubernetes.io/instance"]
    for pol in policies:
        name = pol["metadata"]["name"]
        selector = pol["spec"]["podSelector"].get("matchLabels", {})
        if selector == _redis_pod_selector():  # Redis: its own port only (see GCS FT below)
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
    policies = [p for p in _all("NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
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
                if "namespaceSelector" in peer:  # DNS only
                    assert target == {"k8s-app": "kube-dns"} and ports == {53}, name
                elif not ports:  # Ray-internal: same cluster only
                    assert target == selector, f"{name}: egress beyond its own cluster"
                elif target == _redis_pod_selector():  # GCS FT: Redis's port only
                    assert ports == {REDIS_PORT}, name
                else:
                    assert ports == {DASHBOARD_PORT}, name
                    assert target["app.kubernetes.io/instance"] in instances, name


# --------------------------------------------------------- head-node (GCS) fault tolerance

# Clusters whose GCS keeps its state in Redis, and those that deliberately do not (the
# RayJobs: a cluster lives for one job; its driver dies with the head anyway).
GCS_FT_KINDS = ("RayCluster", "RayService")
GCS_FT_DOCS = [(src, d) for src, d in RAY_DOCS if d["kind"] in GCS_FT_KINDS]
# Ray's default on the head (no env there): a head whose GCS is gone exits after this.
RAY_DEFAULT_GCS_RECONNECT_TIMEOUT_S = 60
# KubeRay rejects these next to gcsFaultToleranceOptions (ValidateRayClusterSpec) or derives
# them from it; set by hand they would also put the password in the manifest.
FT_ANNOTATIONS = {"ray.io/ft-enabled", "ray.io/external-storage-namespace"}
FT_HEAD_ENV = {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME"}
FT_HEAD_PARAMS = {"redis-password", "redis-username"}


def _redis_deployment() -> dict:
    (dep,) = [d for d in _all("Deployment") if d["metadata"]["name"] == "sparc-redis"]
    return dep


def _redis_service() -> dict:
    (svc,) = [d for d in _all("Service") if d["metadata"]["name"] == "sparc-redis"]
    return svc


def _redis_pod_selector() -> dict:
    return _redis_deployment()["spec"]["selector"]["matchLabels"]


def _pod_containers(tpl: dict) -> list[dict]:
    return tpl["spec"]["containers"] + tpl["spec"].get("initContainers", [])


def _redis_container() -> dict:
    (c,) = _redis_deployment()["spec"]["template"]["spec"]["containers"]
    return c


def _env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def _redis_password_ref() -> dict:
    """The secretKeyRef that sets the Redis container's password (`--requirepass $(VAR)`)."""
    c = _redis_container()
    args = c["args"]
    var = re.fullmatch(r"\$\((\w+)\)", args[args.index("--requirepass") + 1])
    assert var, f"--requirepass must take the password from the env, not {args!r}"
    return _env(c)[var.group(1)]["valueFrom"]["secretKeyRef"]


def _head(doc: dict) -> tuple[dict, dict]:
    """(headGroupSpec, head Ray container)."""
    head = _cluster_spec(doc)["headGroupSpec"]
    return head, head["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("job", sorted(JOB_SCRIPTS))
def test_the_rayjobs_have_no_gcs_fault_tolerance(job):
    # A documented choice (rayjob-train.yaml, referenced by rayjob-score.yaml): no FT, no
    # Redis route in the policies.
    cluster = _cluster_spec(_job(job))
    assert "gcsFaultToleranceOptions" not in cluster
    assert {d["kind"] for _, d in GCS_FT_DOCS} == set(GCS_FT_KINDS)


@pytest.mark.parametrize(("src", "doc"), GCS_FT_DOCS, ids=_ids(GCS_FT_DOCS))
def test_gcs_fault_tolerance_uses_the_redis_service_and_the_secret(src, doc):
    ft = _cluster_spec(doc)["gcsFaultToleranceOptions"]
    assert ft.get("backend", "redis") == "redis", src
    # Address: the Redis Service's DNS name and port.
    svc = _redis_service()
    name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
    host, _, port = ft["redisAddress"].split("://")[-1].rpartition(":")
    assert host in {f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}, (
        f"{src}: redisAddress {ft['redisAddress']!r} is not the Service {ns}/{name}"
    )
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}, src
    # Password: from a Secret, never a literal; the same Secret key Redis itself uses.
    password = ft["redisPassword"]
    assert "value" not in password, f"{src}: literal Redis password"
    ref, redis_ref = password["valueFrom"]["secretKeyRef"], _redis_password_ref()
    assert not ref.get("optional"), src
    assert (ref["name"], ref["key"]) == (redis_ref["name"], redis_ref["key"]), src
    assert ref["key"] in _secret(ref["name"])["stringData"], src  # secret.example.yaml


@pytest.mark.parametrize(("src", "doc"), GCS_FT_DOCS, ids=_ids(GCS_FT_DOCS))
def test_gcs_fault_tolerance_has_nothing_kuberay_rejects(src, doc):
    annotations = doc["metadata"].get("annotations", {})
    assert not FT_ANNOTATIONS & set(annotations), f"{src}: old FT annotations with the new field"
    head, container = _head(doc)
    assert not FT_HEAD_PARAMS & set(head["rayStartParams"]), src
    assert not FT_HEAD_ENV & set(_env(container)), src
    if doc["kind"] == "RayService":
        # Each cluster of a NewCluster upgrade must keep its own key prefix (its UID).
        assert "externalStorageNamespace" not in _cluster_spec(doc)["gcsFaultToleranceOptions"]


@pytest.mark.parametrize(("src", "doc"), GCS_FT_DOCS, ids=_ids(GCS_FT_DOCS))
def test_workers_outlast_a_head_restart(src, doc):
    _, head = _head(doc)
    head_timeout = int(
        _env(head)
        .get("RAY_gcs_rpc_server_reconnect_timeout_s", {})
        .get("value", RAY_DEFAULT_GCS_RECONNECT_TIMEOUT_S)
    )
    for role, c in _ray_containers(doc):
        if role == "head":
            continue
        var = _env(c)["RAY_gcs_rpc_server_reconnect_timeout_s"]
        assert "valueFrom" not in var, (src, role)
        assert int(var["value"]) >= 300 and int(var["value"]) > head_timeout, (src, role)


def test_serve_traffic_never_depends_on_the_head():
    service = _one("RayService")
    cluster = _cluster_spec(service)
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replicas there
    assert yaml.safe_load(service["spec"]["serveConfigV2"])["proxy_location"] == "EveryNode"


def test_redis_secret_example_is_a_placeholder():
    ref = _redis_password_ref()
    value = _secret(ref["name"])["stringData"][ref["key"]]
    assert value.startswith("CHANGE-ME"), "example Redis password must be marked as such"


def test_redis_deployment_is_pinned_hardened_sized_and_probed():
    dep = _redis_deployment()
    spec, tpl = dep["spec"], dep["spec"]["template"]
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"].items() <= tpl["metadata"]["labels"].items()
    c = _redis_container()
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
    _assert_sized("redis", c["resources"])
    # Probes: an authenticated PING (redis-cli reads REDISCLI_AUTH from the env).
    assert _env(c)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"] == _redis_password_ref()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = " ".join(c[probe]["exec"]["command"])
        assert "redis-cli" in cmd and "ping" in cmd and "PONG" in cmd, probe


def test_redis_keeps_its_data_across_pod_restarts():
    dep = _redis_deployment()
    c = _redis_container()
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == data_dir]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    (pvc,) = [d for d in _all("PersistentVolumeClaim") if d["metadata"]["name"] == claim]
    if "ReadWriteOnce" in pvc["spec"]["accessModes"]:  # never two pods on one RWO volume
        assert dep["spec"]["strategy"]["type"] == "Recreate"


def test_redis_service_reaches_the_redis_port():
    svc = _redis_service()
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    labels = _redis_deployment()["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in _redis_container()["ports"]}
    (port,) = svc["spec"]["ports"]
    target = port.get("targetPort", port["port"])
    assert ports.get(target, target) == REDIS_PORT == port["port"]


def test_the_base_bundle_deploys_redis_with_the_rayservice():
    base = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())["resources"]
    assert "rayservice.yaml" in base and "redis.yaml" in base


def _selects(selector: dict, labels: dict) -> bool:
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


def _allowed(direction: str, pod: dict, peer: dict, port: int) -> bool:
    """Does some policy selecting `pod` allow `direction` traffic with `peer` (same namespace)?"""
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for pol in _all("NetworkPolicy"):
        if direction not in pol["spec"]["policyTypes"]:
            continue
        if not _selects(pol["spec"]["podSelector"], pod):
            continue
        for rule in pol["spec"].get(key, []):
            if rule.get("ports") and port not in _ports(rule):
                continue
            if not rule.get(peers):  # any peer
                return True
            for p in rule[peers]:
                same_namespace = "namespaceSelector" not in p and "ipBlock" not in p
                if same_namespace and _selects(p.get("podSelector", {}), peer):
                    return True
    return False


def _ray_pods() -> dict[str, dict]:
    """Labels of every Ray pod as KubeRay creates it (template labels + node type), and of
    the Redis cleanup Job's pod (a copy of the head pod) of the GCS-FT clusters."""
    pods = {}
    for _, doc in RAY_DOCS:
        for role, labels in _cluster_pods(doc).items():
            pods[f"{_doc_id(doc)}/{role}"] = labels
            if role == "head" and doc["kind"] in GCS_FT_KINDS:
                pods[f"{_doc_id(doc)}/redis-cleanup"] = labels | {
                    "ray.io/node-type": "redis-cleanup"
                }
    return pods


def _cluster_pods(doc: dict) -> dict[str, dict]:
    """role -> labels of the pods of one Ray CR as KubeRay creates them (template labels +
    node type) and of a RayJob's submitter."""
    pods = {}
    for role, tpl in _pod_templates(doc):
        labels = dict(tpl["metadata"]["labels"])
        if role != "submitter":
            labels["ray.io/node-type"] = "head" if role == "head" else "worker"
            labels["ray.io/is-ray-node"] = "yes"
        pods[role] = labels
    return pods


def test_only_the_gcs_ft_heads_reach_redis():
    redis = _redis_deployment()["spec"]["template"]["metadata"]["labels"]
    pods = _ray_pods()
    expected = {
        f"{_doc_id(doc)}/{role}" for _, doc in GCS_FT_DOCS for role in ("head", "redis-cleanup")
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


@pytest.mark.parametrize(("src", "doc"), RAY_DOCS, ids=_ids(RAY_DOCS))
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


# ------------------------------------------------------------------------- kustomize


@pytest.mark.parametrize("kdir", [KUBERAY, MONITORING], ids=["kuberay", "monitoring"])
def test_kustomization_lists_existing_files(kdir):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    for res in k.get("resources", []):
        assert (kdir / res).is_file(), f"{kdir.name}/kustomization.yaml: missing {res}"
    for gen in k.get("configMapGenerator", []):
        for f in gen.get("files", []):
            assert (kdir / f.split("=")[-1]).is_file(), f
    if shutil.which("kubectl"):
        proc = subprocess.run(
            ["kubectl", "kustomize", str(kdir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr


OVERLAY = KUBERAY / "overlays" / "pinned"
# The overlay lies inside its base's directory, so it lists the base's files (kustomize
# refuses `../..`: "cycle detected"), which lie outside its default load root.
OVERLAY_BUILD = ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone"]


def _base_resources() -> list[str]:
    return yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())["resources"]


def test_the_base_bundle_holds_every_deployed_ray_resource():
    # Everything but the interactive dev cluster: the RayService and both RayJobs.
    listed = {(KUBERAY / r).resolve() for r in _base_resources()}
    for src, doc in RAY_DOCS:
        if doc["kind"] != "RayCluster":
            assert (ROOT / src).resolve() in listed, f"{src} is not in kuberay/kustomization.yaml"


def test_the_pinned_overlay_lists_exactly_the_base_resources():
    k = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    overlay = [(OVERLAY / r).resolve() for r in k["resources"]]
    assert overlay == [(KUBERAY / r).resolve() for r in _base_resources()], (
        "overlays/pinned/kustomization.yaml `resources` differ from the base's list"
    )
    base = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    assert k.get("namespace") == base.get("namespace") == NAMESPACE


def test_the_pinned_overlay_replaces_every_image_by_a_digest():
    k = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    images = {image["name"]: image for image in k["images"]}
    assert len(images) == len(k["images"]), "an image is listed twice"
    for image in images.values():
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]) and "newTag" not in image
    listed = {(OVERLAY / r).resolve() for r in k["resources"]}
    for src, doc in DOCS:
        if (ROOT / src).resolve() not in listed:
            continue
        # What the overlay deploys: every container image is matched by a digest entry.
        if doc["kind"] in CRD_SCHEMAS:
            containers = [
                (role, c) for role, tpl in _pod_templates(doc) for c in _pod_containers(tpl)
            ]
        elif doc["kind"] == "Deployment":
            containers = [("pod", c) for c in _pod_containers(doc["spec"]["template"])]
        else:
            continue
        for role, c in containers:
            assert c["image"].split("@")[0].split(":")[0] in images, (src, role, c["image"])


def _images(node) -> list[str]:
    """Every `image:` value under a built manifest."""
    if isinstance(node, dict):
        own = [node["image"]] if isinstance(node.get("image"), str) else []
        return own + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_the_pinned_overlay_builds_with_kustomize():
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed: the overlay is not built")
    proc = subprocess.run(
        [*OVERLAY_BUILD, str(OVERLAY)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    base = subprocess.run(
        ["kubectl", "kustomize", str(KUBERAY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert base.returncode == 0, base.stderr
    assert kinds == sorted(
        (d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(base.stdout) if d
    )
    images = [i for d in built for i in _images(d.get("spec", {}))]
    assert images and all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in images), images


# ------------------------------------------------------------------------ monitoring


def test_podmonitors_scrape_head_and_workers_metrics_port():
    node_types = set()
    for pm in _all("PodMonitor"):
        node_types.add(pm["spec"]["selector"]["matchLabels"]["ray.io/node-type"])
        assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]
        assert pm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert node_types == {"head", "worker"}


def test_prometheusrule_carries_the_seed_alerts():
    rules = {r["alert"]: r for g in _rule_groups()["groups"] for r in g["rules"] if "alert" in r}
    assert set(rules) == set(ALERTS)
    for alert, (threshold, duration, severity) in ALERTS.items():
        rule = rules[alert]
        assert " ".join(rule["expr"].split()).endswith(threshold), alert
        assert rule["for"] == duration, alert
        assert rule["labels"]["severity"] == severity, alert
        assert "model_name" in rule["expr"], f"{alert} must aggregate by model_name"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def _write_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(_rule_groups(), sort_keys=False))
    return rules


def _run_promtool(*args: str) -> None:
    proc = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_rules(tmp_path):
    _run_promtool("check", "rules", str(_write_rules(tmp_path)))


def test_promtool_alert_unit_tests(tmp_path):
    suite = yaml.safe_load(PROMTOOL_TESTS.read_text())
    suite["rule_files"] = [str(_write_rules(tmp_path))]
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(yaml.safe_dump(suite, sort_keys=False))
    _run_promtool("test", "rules", str(test_file))
    # Every alert is shown both firing and quiet.
    fires, quiet = set(), set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == set(ALERTS) and quiet == set(ALERTS), (fires, quiet)


def test_metric_name_parser():
    expr = (
        'histogram_quantile(0.95, sum by (le, model_name) (rate(foo_bucket{a="b"}[5m]))) > 1e3'
        " or label_values(bar_total, model_name) and on (x) baz offset 5m"
    )
    assert _metric_names(expr) == {"foo_bucket", "bar_total", "baz"}


def test_promql_uses_only_exported_metric_names():
    known = _live_metric_names()
    assert known, "tests/data/live_metric_names.txt is empty"
    used: dict[str, set[str]] = {}
    for g in _rule_groups()["groups"]:
        for r in g["rules"]:
            used.setdefault("PrometheusRule", set()).update(_metric_names(r["expr"]))
    for case in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]:
        for s in case.get("input_series", []):
            used.setdefault("alerts.test.yaml", set()).add(s["series"].split("{")[0].strip())
    for expr in _dashboard_exprs():
        used.setdefault("grafana-dashboard.json", set()).update(_metric_names(expr))
    for where, names in used.items():
        unknown = {n for n in names if n not in known and not BUILTIN_METRIC.fullmatch(n)}
        assert not unknown, f"{where} uses series not in live_metric_names.txt: {sorted(unknown)}"
        assert names & known, where


def test_grafana_dashboard_panels():
    dash = _dashboard()
    titles = {p["title"] for p in dash["panels"]}
    for needed in (
        "Request rate",
        "Error ratio",
        "Prediction latency p50 / p95 / p99",
        "Batch size",
        "Model replicas",
        "Feature drift",
        "Prediction drift",
        "Accuracy",
        "Model version",
        "Requests by version",
        "p99 latency by version",
        "Accuracy by version",
        "Candidate traffic weight",
        "Shadow agreement",
        "Release decisions",
    ):
        assert needed in titles, needed
    exprs = " ".join(_dashboard_exprs())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model_name)" in exprs
    assert 'ray_serve_deployment_replica_healthy{application="sparc", deployment="Model"}' in exprs
    for p in dash["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


# ------------------------------------------------------------------------ Dockerfile


def test_serve_env_checks_cover_every_ray_manifest():
    # tests/unit/test_serve_env.py lists the files whose Ray containers repeat serve.env.
    from tests.unit import test_serve_env

    files = {Path(src).name for src, _ in RAY_DOCS}
    missing = files - set(test_serve_env.MANIFESTS)
    assert not missing, f"add {sorted(missing)} to test_serve_env.MANIFESTS"


def test_pinned_ray_matches_installed_ray():
    # Same release line as the venv the tests and the Serve config were checked with.
    installed = dist_version("ray")
    assert installed.split(".")[:2] == RAY_VERSION.split(".")[:2], (installed, RAY_VERSION)


def test_dockerfile_matches_manifests():
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert froms == [f"rayproject/ray:{RAY_VERSION}-{PY_TAG}"]
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    workdirs = [ln.split()[1] for ln in lines if ln.upper().startswith("WORKDIR ")]
    assert workdirs[-1] == "/home/ray", "Ray's working dir must stay /home/ray (model_store)"
    # The locked versions with their sha256, then the package without resolving anything.
    assert any(
        "pip install --no-cache-dir --require-hashes -r requirements.lock" in ln for ln in lines
    )
    assert any("pip install --no-cache-dir --no-deps ." in ln for ln in lines)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)
