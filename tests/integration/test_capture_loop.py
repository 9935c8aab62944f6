"""The MLOps loop on a real `ray start --head` cluster: the Serve app captures what it scores,
`/feedback` labels join it, the drift report finds the shifted feature, the capture sink
fails mid-load without failing a prediction, and the training job retrains from the labelled
captures into a canary release."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import shutil
import sys

import httpx
import pytest

from sparc_ray.data.captured import read_predictions
from sparc_ray.data.loading import load_dataset
from sparc_ray.registry.layout import capture_root
from sparc_ray.registry.releases import current_release
from sparc_ray.registry.store import ModelRegistry
from tests.integration.cluster import FEEDBACK_TOKEN, end_release, running_cluster
from tests.integration.test_serving import job_config
from tests.waiting import wait_until

pytestmark = pytest.mark.cluster
NAME, SHIFTED = "breast_cancer", "mean radius"
CAPTURE = {"capture_rate": 1.0, "capture_flush_s": 0.5}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    work = tmp_path_factory.mktemp("capture")
    df, target = load_dataset("builtin:breast_cancer")
    X = df.drop(columns=target)
    shifted = X.assign(**{SHIFTED: X[SHIFTED] + 2 * X[SHIFTED].std()})
    with running_cluster(work) as cluster:
        cluster.train("--config", str(job_config(work / "lr.yaml", "logistic_regression", {})))
        cluster.deploy(cluster.serve_config(Postprocessor={"user_config": CAPTURE}))
        yield {
            "cluster": cluster,
            "work": work,
            "store": work / "model_store",
            "rows": shifted.to_dict("records"),
            "truth": df[target].astype(str).tolist(),
        }


@pytest.fixture(autouse=True)
def no_release_left_behind(loop):
    """The release a test started (retraining into a canary) ends with the test."""
    yield
    end_release(loop["cluster"], loop["store"], NAME)


def traffic(loop, n: int) -> list[dict]:
    def one(i: int) -> dict:
        row = i % len(loop["rows"])
        r = httpx.post(
            f"{loop['cluster'].url}/predict", json={"instances": [loop["rows"][row]]}, timeout=60
        )
        return {"status": r.status_code, "row": row, **r.json()}

    with cf.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def captured(loop) -> int:
    return len(read_predictions(capture_root(str(loop["store"]), NAME)))


def test_shifted_traffic_and_labels_are_captured_and_the_report_finds_the_shift(loop, tmp_path):
    answers = traffic(loop, 569)
    assert {a["status"] for a in answers} == {200}
    items = [
        {"prediction_id": a["prediction_id"], "row": 0, "label": loop["truth"][a["row"]]}
        for a in answers
    ]
    auth = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
    r = httpx.post(f"{loop['cluster'].url}/feedback", json=items, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["matched"] == 569
    wait_until(lambda: captured(loop) >= 569, 30, message="569 captured rows")
    url = f"http://127.0.0.1:{loop['cluster'].metrics}/metrics"
    wait_until(
        lambda: re.search(r"^ray_ml_captured_rows_total\{", httpx.get(url, timeout=30).text, re.M),
        60,
        message=f"{url} to export ray_ml_captured_rows_total",
    )
    out = tmp_path / "drift.html"
    report = loop["cluster"].run(
        sys.executable, "-m", "sparc_ray.cli", "report", "drift", "--store", str(loop["store"]),
        "--name", NAME, "--out", str(out), "--public-key", str(loop["cluster"].public_key),
    )  # fmt: skip
    assert f"most drifted: {SHIFTED}" in report.stdout, report.stdout
    page = out.read_text()
    assert re.search(r"Accuracy: 0\.\d+ over 569 labelled rows", page)
    # each feature's mean |contribution| over the captured rows, from the signed version
    weights = re.findall(r"<td class='weight'>([0-9.e-]+)</td>", page)
    assert len(weights) == page.count("<tr class=") and max(map(float, weights)) > 0


def test_an_unwritable_sink_fails_no_prediction_and_capture_resumes(loop):
    root = capture_root(str(loop["store"]), NAME)
    before = captured(loop)
    shutil.move(root, f"{root}.aside")
    with open(root, "w") as fh:  # a file where the capture directory should be
        fh.write("sink unavailable")
    try:
        answers = traffic(loop, 300)
        assert {a["status"] for a in answers} == {200}  # zero failed predictions
        url = f"http://127.0.0.1:{loop['cluster'].metrics}/metrics"
        dropped = wait_until(
            lambda: re.search(
                r'^ray_ml_capture_dropped_total\{[^}]*reason="write_failed"[^}]*\} (\d+)',
                httpx.get(url, timeout=30).text,
                re.M,
            ),
            60,
            message=f"{url} to export ray_ml_capture_dropped_total{{reason=write_failed}}",
        )
        assert float(dropped.group(1)) > 0
        health = httpx.get(f"{loop['cluster'].url}/health", timeout=30)
        assert health.status_code == 200
    finally:
        os.remove(root)
        shutil.move(f"{root}.aside", root)
    assert {a["status"] for a in traffic(loop, 100)} == {200}
    wait_until(lambda: captured(loop) >= before + 100, 30, message="capture to resume")


def test_retraining_from_labelled_captures_lands_as_a_canary(loop):
    reg = ModelRegistry(loop["store"])
    production = reg.alias(NAME)
    job = loop["cluster"].train(
        "--config", str(job_config(loop["work"] / "retrain.yaml", "logistic_regression", {})),
        "--data", f"capture:model_store/{NAME}", "--with-training-data",
        "--release", "canary", "--release-weight", "20",
    )  # fmt: skip
    assert "canary at 20%" in job.stdout, job.stdout[-2000:]
    new = reg.versions(NAME)[-1]
    release = current_release(reg, NAME)
    assert release is not None and release.version == new and release.mode == "canary"
    assert reg.alias(NAME) == production
    meta = reg.metadata(NAME, new)
    source = (
        meta["training_data"]["source"] if isinstance(meta, dict) else meta.training_data.source
    )
    assert source == f"capture:model_store/{NAME}"
