"""`ray job submit … jobs/train.py` on the multi-node cluster: folds on every worker node, trial
actors off the head, and a search that loses the node holding its trials finishes with the
same answer as an undisturbed one: every configuration evaluated, no fold counted twice."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import signing
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.experiment_seal import SEAL_FILE
from tests.cluster.nodes import ROOT, MultiNodeCluster
from tests.s3_server import CREDENTIALS, running_s3, s3_uri
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster

SPACE = {
    "random_forest": {"n_estimators": [100, 300], "max_depth": [None, 4]},
    "logistic_regression": {"C": [0.1, 1.0, 10.0]},
    "hist_gradient_boosting": {"max_iter": [50]},
}
N_CONFIGS, N_FOLDS = 8, 5


def write_config(cluster: MultiNodeCluster, run: str, **search) -> Path:
    cfg = {
        "name": "wine",
        "data": {"path": "builtin:wine", "target": "target"},
        "cv": {"n_folds": N_FOLDS},
        "search": {
            "scheduler": "fifo",
            "space": SPACE,
            "storage_path": str(cluster.workdir / run / "ray_results"),  # every node sees it
            **search,
        },
        "registry": {"store": str(cluster.workdir / run / "store")},
    }
    path = cluster.workdir / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(cluster: MultiNodeCluster, config: Path, *args: str) -> str:
    """`ray job submit … jobs/train.py --config CONFIG ARGS`, signing what it publishes."""
    key = cluster.workdir / "keys/model_signing.key"
    return cluster.submit(
        sys.executable, str(ROOT / "jobs/train.py"), "--config", str(config),
        "--signing-key", str(key), *args,
    )  # fmt: skip


def published(cluster: MultiNodeCluster, run: str) -> dict:
    (meta,) = (cluster.workdir / run / "store/wine").glob("*/metadata.json")
    return json.loads(meta.read_text())


def trial_scores(metadata: dict) -> dict[str, tuple[float, int]]:
    """Per configuration, its final CV mean and how many folds it counted (Tune's
    result.json, last line of each trial)."""
    scores = {}
    for result in Path(metadata["search"]["experiment_path"]).glob("*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        # (rounded: the same fold scores summed in another order may differ in the last bit)
        scores[last["config"]["candidate"]["label"]] = (round(last["cv_mean"], 12), last["folds"])
    return scores


def task_nodes(cluster: MultiNodeCluster, job_id: str, name: str) -> Counter:
    """Finished attempts of the job's tasks called ``name``, by node name."""
    names = {node_id: n.name for n in cluster.nodes for node_id in n.ids}
    tasks = cluster.state("tasks", job_id=job_id)
    return Counter(
        names.get(t["node_id"], t["node_id"])
        for t in tasks
        if t["name"].startswith(name) and t["state"] == "FINISHED"
    )


def trial_actors(cluster: MultiNodeCluster, job_id: str) -> list[dict]:
    return [a for a in cluster.state("actors", job_id=job_id) if a["class_name"] == "ImplicitFunc"]


def test_a_search_loses_the_node_of_its_trials_and_gives_the_undisturbed_answer(multinode):
    cluster = multinode
    cluster.ensure("node_a", "node_b")
    if cluster.running("node_c"):  # this test has node_c join mid-search
        cluster.kill("node_c")

    reference = cluster.wait_job(train(cluster, write_config(cluster, "reference")))
    assert reference[0]["driver_exit_code"] == 0, reference[1][-3000:]
    expected = published(cluster, "reference")

    sid = train(cluster, write_config(cluster, "disturbed"))
    job_id = wait_until(lambda: cluster.job(sid).get("job_id"), 60, message="the job's id")
    node_a = cluster.node("node_a").node_id

    def trials_on_node_a_mid_search():
        folds_done = sum(task_nodes(cluster, job_id, "_fold_task").values())
        alive = [a for a in trial_actors(cluster, job_id) if a["state"] == "ALIVE"]
        return 2 <= folds_done < N_CONFIGS * N_FOLDS // 2 and any(
            a["node_id"] == node_a for a in alive
        )

    wait_until(trials_on_node_a_mid_search, 180, interval=0.3, message="trials running on node_a")
    cluster.kill("node_a")  # the node holding every trial actor (only it has sparc_trials)
    cluster.restart("node_c")  # a node joins mid-search
    cluster.restart("node_a")  # the lost pod comes back
    record, log = cluster.wait_job(sid)
    assert record["driver_exit_code"] == 0, log[-3000:]
    got = published(cluster, "disturbed")

    # The same answer: best configuration and its CV score, and every configuration's score
    # over exactly N_FOLDS folds (a fold counted twice or lost would change it).
    assert got["params"] == expected["params"] and got["model_type"] == expected["model_type"]
    assert got["metrics"]["cv"]["mean"] == pytest.approx(expected["metrics"]["cv"]["mean"])
    assert got["search"]["failed"] == [] and got["search"]["trials"] == N_CONFIGS
    reference_scores, scores = trial_scores(expected), trial_scores(got)
    assert len(scores) == N_CONFIGS and all(f == N_FOLDS for _, f in scores.values())
    assert scores == reference_scores

    # Trials died with node_a and were restarted (Tune's FailureConfig); none ran on the head.
    actors = trial_actors(cluster, job_id)
    assert any(a["node_id"] == node_a and a["state"] == "DEAD" for a in actors)
    assert not [a for a in actors if a["node_id"] == cluster.head.node_id]
    # Folds ran on every worker node, the one that joined mid-search included.
    folds = task_nodes(cluster, job_id, "_fold_task")
    assert {"node_a", "node_b", "node_c"} <= set(folds), folds
    assert "head" not in folds


def test_a_configuration_that_cannot_be_evaluated_is_named_never_dropped(multinode):
    """hist_gradient_boosting with max_iter=0 fails in every fold (scikit-learn refuses it):
    the job names it and publishes nothing, unless --allow-incomplete, and then the version's
    metadata and the summary name it."""
    cluster = multinode
    cluster.ensure("node_a", "node_b")
    space = {"logistic_regression": {"C": [1.0]}, "hist_gradient_boosting": {"max_iter": [0]}}
    config = write_config(cluster, "broken", space=space, max_failures=0)

    record, log = cluster.wait_job(train(cluster, config))
    assert record["driver_exit_code"] == 4, log[-3000:]
    assert "search incomplete; nothing published" in log
    assert "1 configuration(s) could not be evaluated: hist_gradient_boosting max_iter=0" in log
    assert not (cluster.workdir / "broken/store/wine").exists()

    record, log = cluster.wait_job(train(cluster, config, "--allow-incomplete"))
    assert record["driver_exit_code"] == 0, log[-3000:]
    assert "NOT EVALUATED hist_gradient_boosting max_iter=0" in log
    failed = published(cluster, "broken")["search"]["failed"]
    assert [f["label"] for f in failed] == ["hist_gradient_boosting max_iter=0"]
    assert "max_iter" in failed[0]["error"]


def test_on_s3_the_refit_survives_the_loss_of_its_node(multinode):
    """The job with the registry and Tune's storage on an S3 server (moto) that every node
    reaches, and the node running the refit (a Ray task) killed under it: the refit runs
    again on another node, the experiment is sealed and the signed version loads verified
    from the bucket."""
    cluster = multinode
    cluster.ensure("node_a", "node_b")
    names = {i: n.name for n in cluster.workers for i in n.ids}
    space = {"random_forest": {"n_estimators": [1500]}}  # a refit of seconds on one CPU
    config = write_config(cluster, "s3", space=space)
    with running_s3(cluster.network.gateway) as (endpoint, s3):
        s3.create_bucket(Bucket="sparc")
        store, tune = s3_uri(endpoint, "sparc", "models"), s3_uri(endpoint, "sparc", "tune")
        key = str(cluster.workdir / "keys/model_signing.key")
        sid = cluster.submit(
            sys.executable, str(ROOT / "jobs/train.py"), "--config", str(config),
            "--signing-key", key, "--store", store, "--storage-path", tune, "--n-folds", "2",
            env=CREDENTIALS,
        )  # fmt: skip
        job_id = wait_until(lambda: cluster.job(sid).get("job_id"), 60, message="the job's id")

        def refit_node() -> str | None:
            tasks = cluster.state("tasks", job_id=job_id, state="RUNNING")
            running = [t for t in tasks if t["name"].endswith("_refit_task")]
            return names.get(running[0]["node_id"]) if running else None

        victim = wait_until(refit_node, 180, interval=0.2, message="the refit running")
        cluster.kill(victim)
        record, log = cluster.wait_job(sid)
        assert record["driver_exit_code"] == 0, log[-3000:]

        public = signing.public_key_bytes(str(cluster.workdir / "keys/model_signing.pub"))
        version = ModelRegistry(store).alias("wine")
        loaded = RegistryLoader(store, "wine", public).load(version)
        assert loaded.signed_by == signing.key_id(public)
        assert loaded.metadata.params["n_estimators"] == 1500
        objects = s3.list_objects_v2(Bucket="sparc", Prefix="tune/")["Contents"]
        assert any(o["Key"].endswith(SEAL_FILE) for o in objects)
    refits = [t for t in cluster.state("tasks", job_id=job_id) if t["name"].endswith("_refit_task")]
    finished = {names.get(t["node_id"]) for t in refits if t["state"] == "FINISHED"}
    assert finished and victim not in finished, refits
    cluster.restart(victim)
