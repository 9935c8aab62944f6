"""`ray job submit … jobs/score.py` on the multi-node cluster, losing a worker node that holds a
scoring actor mid-job: every input row is in predictions + rejects exactly once, and the
predictions equal those of an undisturbed run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from sparc_ray.registry import signing
from tests.cluster.nodes import ROOT, MultiNodeCluster
from tests.integration.test_scoring import publish
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster

FILES, ROWS_PER_FILE, FEATURES = 8, 100_000, 10
BAD = {0: [17, 99_998], 5: [4_242]}  # file -> rows whose first feature is not a number


def publish_model(cluster: MultiNodeCluster) -> None:
    """A signed, promoted forest on synthetic data (ONNX), in workdir/scoring/store."""
    X, y = make_classification(5000, FEATURES, n_informative=6, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(FEATURES)])
    frame["label"] = np.where(y == 1, "yes", "no")
    key = signing.load_private_key(str(cluster.workdir / "keys/model_signing.key"))
    publish(cluster.workdir / "scoring/store", "synth", frame, "label", "random_forest", key)


def write_input(cluster: MultiNodeCluster) -> None:
    rng = np.random.default_rng(1)
    data = cluster.workdir / "scoring/input"
    data.mkdir(parents=True)
    for f in range(FILES):
        part = pd.DataFrame(
            rng.normal(size=(ROWS_PER_FILE, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)]
        ).astype({"f0": object})
        for row in BAD.get(f, []):
            part.loc[row, "f0"] = "twelve"
        part.to_csv(data / f"part-{f}.csv", index=False)


def score(cluster: MultiNodeCluster, out: str) -> str:
    return cluster.submit(
        sys.executable, str(ROOT / "jobs/score.py"), "--data", "scoring/input",
        "--name", "synth", "--store", "scoring/store", "--out", f"scoring/{out}",
        "--public-key", str(cluster.workdir / "keys/model_signing.pub"), "--batch-rows", "4096",
    )  # fmt: skip


def results(cluster: MultiNodeCluster, out: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    root = cluster.workdir / "scoring" / out
    keys = ["source", "row_id"]
    predictions = pd.read_parquet(root / "predictions").sort_values(keys, ignore_index=True)
    rejects = pd.read_parquet(root / "rejects").sort_values(keys, ignore_index=True)
    return predictions, rejects, json.loads((root / "summary.json").read_text())


def test_scoring_loses_a_node_and_writes_every_row_exactly_once(multinode):
    cluster = multinode
    cluster.ensure("node_a", "node_b", "node_c")
    publish_model(cluster)
    write_input(cluster)

    record, log = cluster.wait_job(score(cluster, "reference"))
    assert record["driver_exit_code"] == 0, log[-3000:]
    expected, expected_rejects, _ = results(cluster, "reference")

    sid = score(cluster, "disturbed")
    job_id = wait_until(lambda: cluster.job(sid).get("job_id"), 60, message="the job's id")

    def node_with_a_busy_scorer():
        names = {i: n.name for n in cluster.workers for i in n.ids}
        tasks = cluster.state("tasks", job_id=job_id)
        done = [t for t in tasks if "BatchScorer" in t["name"] and t["state"] == "FINISHED"]
        running = [t for t in tasks if "BatchScorer" in t["name"] and t["state"] == "RUNNING"]
        nodes = [names[t["node_id"]] for t in running if t["node_id"] in names]
        return len(done) >= 2 and nodes and nodes[0]

    victim = wait_until(node_with_a_busy_scorer, 240, interval=0.3, message="scoring under way")
    cluster.kill(victim)
    cluster.restart(victim)
    record, log = cluster.wait_job(sid)
    assert record["driver_exit_code"] == 0, log[-3000:]
    predictions, rejects, summary = results(cluster, "disturbed")

    # Every row exactly once in predictions + rejects, per input file.
    keys = ["source", "row_id"]
    every = pd.concat([predictions[keys], rejects[keys]], ignore_index=True)
    assert not every.duplicated().any(), every[every.duplicated()].head()
    assert len(every) == FILES * ROWS_PER_FILE == summary["rows"]
    assert sorted(every.groupby("source").row_id.max()) == [ROWS_PER_FILE - 1] * FILES
    assert len(rejects) == sum(map(len, BAD.values())) == summary["rejected"]
    # The same predictions as the undisturbed run.
    pd.testing.assert_frame_equal(predictions, expected)
    pd.testing.assert_frame_equal(rejects[keys], expected_rejects[keys])
