"""The RayJobs: training runs jobs/train.py and scoring jobs/score.py, with flags their argparse
knows, on the model name and store that serving uses; scoring gets the public key
(ConfigMap, read-only) and never the private signing key, on a fixed-size cluster; neither
keeps its GCS state in Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.manifests.helpers import (
    GCS_FT_DOCS,
    GCS_FT_KINDS,
    JOB_SCRIPTS,
    KEYS_DIR,
    MODEL_STORE_MOUNT,
    PUBLIC_KEY_CONFIGMAP,
    ROOT,
    SCORE_JOB,
    SIGNING_KEY_SECRET,
    TRAIN_JOB,
    TUNE_STORAGE_MOUNT,
    cluster_spec,
    configmap,
    entrypoint,
    every,
    flag_values,
    mounts,
    pod_containers,
    pod_templates,
    rayjob,
    secret_names,
    serve_config,
)


def test_the_rayjobs_found():
    assert sorted(d["metadata"]["name"] for d in every("RayJob")) == sorted(JOB_SCRIPTS)


def test_rayjob_entrypoint_runs_train_script():
    argv = entrypoint()
    assert argv[:2] == ["python", "jobs/train.py"], argv
    assert (ROOT / "jobs" / "train.py").is_file(), "jobs/train.py is missing"
    flags = flag_values(argv)
    assert (ROOT / flags["--config"]).is_file(), f"--config {flags['--config']} does not exist"
    assert flags["--store"] == MODEL_STORE_MOUNT
    # Tune storage apart from the store (serving and scoring mount the store): its own
    # volume, which only this job mounts (test_ray_clusters), and a resume needs the key.
    assert flags["--storage-path"] == TUNE_STORAGE_MOUNT
    assert flags["--signing-key"].startswith(KEYS_DIR + "/")


def test_trial_actors_only_fit_on_training_workers():
    from sparc_ray.training.placement import TRIAL_NODE_RESOURCE, TRIAL_NODE_UNITS

    cluster = cluster_spec(rayjob(TRAIN_JOB))

    def offered(params: dict) -> dict:
        """rayStartParams.resources as `ray start --resources=` reads it: KubeRay passes
        the value through a shell, so it is a double-quoted string with escaped quotes."""
        raw = params.get("resources")
        if raw is None:
            return {}
        assert raw.startswith('"') and raw.endswith('"'), raw
        return json.loads(raw[1:-1].replace('\\"', '"'))

    assert TRIAL_NODE_RESOURCE not in offered(cluster["headGroupSpec"]["rayStartParams"])
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no fold either
    for group in cluster["workerGroupSpecs"]:
        assert offered(group["rayStartParams"]) == {TRIAL_NODE_RESOURCE: TRIAL_NODE_UNITS}
    # The job looks at the live cluster when it starts: with no worker up yet it would
    # fall back to placing trials anywhere, the head included.
    assert sum(g["minReplicas"] for g in cluster["workerGroupSpecs"]) >= 1


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
    for flag in flag_values(entrypoint(job)):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", proc.stdout), (
            f"{flag} from the {job} entrypoint is not an option of {script.name}:\n{proc.stdout}"
        )


@pytest.mark.parametrize("job", sorted(JOB_SCRIPTS))
def test_rayjob_lifecycle(job):
    spec = rayjob(job)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert spec.get("activeDeadlineSeconds", 1) > 0
    # A retry on a new cluster is an explicit re-run (train: --resume; score: a bad input,
    # model or key fails the same way again).
    assert spec.get("backoffLimit", 0) == 0


def _model_name() -> str:
    """The registry model name training publishes (its --config) and serving loads."""
    flags = flag_values(entrypoint(TRAIN_JOB))
    name = flags.get("--name") or yaml.safe_load((ROOT / flags["--config"]).read_text())["name"]
    (args,) = [app["args"] for app in serve_config()["applications"]]
    assert args["model_name"] == name, "serve_config.yaml serves another model than training"
    return name


def test_score_job_runs_score_script_on_the_served_model_and_store():
    argv = entrypoint(SCORE_JOB)
    assert argv[:2] == ["python", "jobs/score.py"], argv
    assert (ROOT / "jobs" / "score.py").is_file(), "jobs/score.py is missing"
    flags = flag_values(argv)
    for flag in ("--data", "--name", "--store", "--out", "--public-key"):
        assert flags.get(flag), f"the scoring entrypoint has no {flag} value"
    # Same model and registry as training publishes to and the RayService serves.
    assert flags["--name"] == _model_name()
    assert flags["--store"] == flag_values(entrypoint(TRAIN_JOB))["--store"]
    assert flags["--store"] == MODEL_STORE_MOUNT  # = serve_config's model_store, resolved
    # Input and results on the mounted PVC (or an object store), outside the model's
    # registry directory; results never overwrite the input.
    for flag in ("--data", "--out"):  # the read-write `_batches` mount (test_ray_clusters)
        value = flags[flag]
        assert "://" in value or value.startswith("/home/ray/batches/"), (flag, value)
    assert flags["--out"] != flags["--data"]
    # jobs/score.py refuses an existing --out: each run needs a new one (submitter's shell).
    assert "$(date" in flags["--out"], "a fixed --out lets the job run only once"


def _head_template(doc: dict) -> dict:
    return cluster_spec(doc)["headGroupSpec"]["template"]


def test_score_job_reads_the_public_key_from_the_configmap_read_only():
    flags = flag_values(entrypoint(SCORE_JOB))
    key_dir, key_file = flags["--public-key"].rsplit("/", 1)
    assert key_dir == KEYS_DIR and key_file == "model_signing.pub"
    # The driver (head) reads the key file; actors get its bytes from the driver.
    tpl = _head_template(rayjob(SCORE_JOB))
    volumes = {v["name"]: v for v in tpl["spec"]["volumes"]}
    (key,) = mounts(tpl["spec"]["containers"][0], volumes, key_dir)
    assert key["configMap"]["name"] == PUBLIC_KEY_CONFIGMAP
    assert key["mount"]["readOnly"] is True
    assert key_file in configmap(PUBLIC_KEY_CONFIGMAP)["data"]
    assert key["configMap"].get("items") is None or key_file in {
        i["path"] for i in key["configMap"]["items"]
    }


def test_score_job_never_sees_the_private_signing_key():
    doc = rayjob(SCORE_JOB)
    for role, tpl in pod_templates(doc):
        assert SIGNING_KEY_SECRET not in secret_names(tpl), role
        volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
        for c in pod_containers(tpl):
            for key in mounts(c, volumes, KEYS_DIR):
                assert "secret" not in key, (role, c["name"])
    # ... nor through the entrypoint.
    assert "--signing-key" not in flag_values(entrypoint(SCORE_JOB))
    assert SIGNING_KEY_SECRET not in yaml.safe_dump(doc["spec"])


def test_score_job_cluster_is_fixed_size_and_leaves_the_head_to_the_driver():
    from sparc_ray.batch.job import READ_CPUS, WRITE_CPUS

    cluster = cluster_spec(rayjob(SCORE_JOB))
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


@pytest.mark.parametrize("job", sorted(JOB_SCRIPTS))
def test_the_rayjobs_have_no_gcs_fault_tolerance(job):
    # A documented choice (rayjob-train.yaml, referenced by rayjob-score.yaml): no FT, no
    # Redis route in the policies.
    cluster = cluster_spec(rayjob(job))
    assert "gcsFaultToleranceOptions" not in cluster
    assert {d["kind"] for _, d in GCS_FT_DOCS} == set(GCS_FT_KINDS)
