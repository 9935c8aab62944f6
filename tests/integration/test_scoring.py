"""Batch scoring with Ray Data on a real local Ray: the job's output equals the in-process
predictions of the same verified version; bad rows go to the rejects, the rest is scored."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparc_ray.batch.job import ScorePlan, run
from sparc_ray.data.loading import columns_from_frame, load_dataset
from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import releases, signing
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.estimator import SPARCClassificationModel
from sparc_ray.training.explain_check import check_explanations
from sparc_ray.training.onnx_export import export_onnx
from tests.conftest import ROOT
from tests.integration.cluster import in_process_ray

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ray_local():
    with in_process_ray(num_cpus=2):
        yield


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    private, public = signing.generate_key_pair(str(tmp_path_factory.mktemp("keys") / "k"))
    return signing.load_private_key(str(private)), signing.public_key_bytes(str(public)), public


def publish(store, name: str, frame: pd.DataFrame, target: str, family: str, key) -> str:
    X, y = frame.drop(columns=target), frame[target]
    model = SPARCClassificationModel(
        {"model_type": family, "model": {}, "cross_validation": {"n_folds": 3}}
    )
    model.fit(X, y)
    onnx, report = export_onnx(model, X.head(100))
    meta = {
        "gates": {"passed": True},
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "input_limits": model.input_limits(),
        "onnx": report,
        "model_type": family,
        "explanations": check_explanations(model, X.head(200), X).to_metadata(),
    }
    reg = ModelRegistry(str(store))
    version = reg.publish(name, model, meta, {report["file"]: onnx}, signing_key=key)
    releases.promote(reg, name, version)
    return version


def expected(store, name: str, public_key: bytes, frame: pd.DataFrame) -> tuple[np.ndarray, list]:
    """Probabilities and labels of the version as a Serve replica computes them."""
    reg = ModelRegistry(str(store))
    loaded = RegistryLoader(str(store), name, public_key).load(reg.alias(name))
    names, kinds = loaded.metadata.feature_names, loaded.metadata.feature_kinds
    proba = loaded.scorer.predict_proba(columns_from_frame(frame, names, kinds))
    classes = loaded.metadata.classes
    return proba, [classes[i] for i in proba.argmax(axis=1)]


def read_out(out) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    predictions = pd.read_parquet(out / "predictions").sort_values("row_id", ignore_index=True)
    rejects = pd.read_parquet(out / "rejects") if any((out / "rejects").iterdir()) else None
    return predictions, rejects, json.loads((out / "summary.json").read_text())


@pytest.mark.cluster
def test_mixed_dataset_with_bad_rows(ray_local, keys, loans, tmp_path):
    """Numeric + categorical features with missing values and unseen categories; three bad
    cells are rejected with row, feature and reason, every other row is scored."""
    store = tmp_path / "store"
    version = publish(store, "loans", loans, "decision", "random_forest", keys[0])
    rows = loans.astype({"income": object, "region": object})
    rows.loc[5, "region"] = "atlantis"  # unseen category: scored, as the API does
    rows.loc[6, "age"] = np.nan  # missing: scored
    rows.loc[3, "income"] = "twelve"
    rows.loc[7, "income"] = "1e400"
    rows.loc[9, "region"] = "x" * 1001
    rows.to_csv(tmp_path / "rows.csv", index=False)
    plan = ScorePlan.check(
        str(tmp_path / "rows.csv"), "loans", str(store), str(tmp_path / "out"), None, keys[1]
    )
    summary = run(plan, batch_rows=128)  # several batches per actor

    predictions, rejects, written = read_out(tmp_path / "out")
    assert written == summary
    assert (summary["rows"], summary["scored"], summary["rejected"]) == (600, 597, 3)
    assert summary["ignored_columns"] == ["decision"] and summary["engine"] == "onnx"
    assert summary["signed_by"] == signing.key_id(keys[1])
    assert sorted(zip(rejects.row_id, rejects.feature, rejects.reason, strict=True)) == [
        (3, "income", "expected a number, got str 'twelve'"),
        (7, "income", "number out of range (overflows to inf)"),
        (9, "region", "string longer than 1000 characters"),
    ]
    good = rows.drop(index=[3, 7, 9]).astype({"income": float})
    proba, labels = expected(store, "loans", keys[1], good)
    assert predictions.row_id.tolist() == good.index.tolist()
    assert predictions.prediction.tolist() == labels
    cols = [f"proba_{c}" for c in ["approved", "rejected", "review"]]
    np.testing.assert_allclose(predictions[cols].to_numpy(), proba, rtol=0, atol=1e-12)
    assert set(predictions.model_version) == {version}


@pytest.mark.cluster
def test_explain_adds_each_rows_contributions(ray_local, keys, loans, tmp_path):
    """`--explain`: every scored row carries the signed version's contributions (the columns
    add up to the explained output), and the predictions are those of a plain run."""
    store = tmp_path / "store"
    version = publish(store, "loans", loans, "decision", "random_forest", keys[0])
    loans.to_csv(tmp_path / "rows.csv", index=False)
    data = str(tmp_path / "rows.csv")
    for out, explain in (("plain", False), ("explained", True)):
        plan = ScorePlan.check(
            data, "loans", str(store), str(tmp_path / out), None, keys[1], explain
        )
        run(plan, batch_rows=128)
    plain, _, _ = read_out(tmp_path / "plain")
    explained, _, summary = read_out(tmp_path / "explained")
    assert summary["explanation_space"] == "probability"
    pd.testing.assert_frame_equal(explained[plain.columns], plain)
    features = [c for c in loans.columns if c != "decision"]
    contributions = explained[[f"contribution_{f}" for f in features]].sum(axis=1)
    output = explained.apply(lambda r: r[f"proba_{r['explained_class']}"], axis=1)
    np.testing.assert_allclose(explained.base_value + contributions, output, atol=1e-6)
    assert (explained.explained_class == explained.prediction).all()
    assert set(explained.model_version) == {version}


@pytest.mark.cluster
def test_bundled_dataset_equals_in_process(ray_local, keys, tmp_path):
    frame, target = load_dataset("builtin:breast_cancer")
    store = tmp_path / "store"
    publish(store, "cancer", frame, target, "logistic_regression", keys[0])
    plan = ScorePlan.check(
        "builtin:breast_cancer", "cancer", str(store), str(tmp_path / "out"), None, keys[1]
    )
    summary = run(plan)
    predictions, rejects, _ = read_out(tmp_path / "out")
    assert rejects is None and summary["rejected"] == 0 and len(predictions) == len(frame)
    proba, labels = expected(store, "cancer", keys[1], frame.drop(columns=target))
    assert predictions.prediction.tolist() == labels
    np.testing.assert_allclose(
        predictions[["proba_benign", "proba_malignant"]].to_numpy(), proba, atol=1e-12
    )


@pytest.mark.cluster
def test_parquet_directory_numbers_rows_per_file(ray_local, keys, loans, tmp_path):
    store = tmp_path / "store"
    publish(store, "loans", loans, "decision", "hist_gradient_boosting", keys[0])
    data = tmp_path / "parts"
    data.mkdir()
    X = loans.drop(columns="decision")
    pq.write_table(pa.Table.from_pandas(X.head(250), preserve_index=False), data / "a.parquet")
    pq.write_table(pa.Table.from_pandas(X.iloc[250:], preserve_index=False), data / "b.parquet")
    (data / "_SUCCESS").write_text("")  # a marker, not data
    out = tmp_path / "out"
    summary = run(ScorePlan.check(str(data), "loans", str(store), str(out), None, keys[1]))
    predictions = pd.read_parquet(out / "predictions").sort_values(["source", "row_id"])
    assert summary["scored"] == 600
    assert predictions.groupby("source").row_id.max().to_dict() == {
        "a.parquet": 249,
        "b.parquet": 349,
    }
    _, labels = expected(store, "loans", keys[1], X)
    assert predictions.prediction.tolist() == labels


def test_job_refuses_bad_input_before_starting_ray(keys, loans, tmp_path):
    store = tmp_path / "store"
    publish(store, "loans", loans, "decision", "logistic_regression", keys[0])
    loans.drop(columns="region").to_csv(tmp_path / "rows.csv", index=False)

    def job(*extra: str) -> subprocess.CompletedProcess:
        args = ["--data", str(tmp_path / "rows.csv"), "--name", "loans", "--store", str(store)]
        return subprocess.run(
            [sys.executable, str(ROOT / "jobs/score.py"), *args, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )

    missing = job("--out", str(tmp_path / "out"), "--public-key", str(keys[2]))
    assert missing.returncode == 2 and "missing feature columns ['region']" in missing.stderr
    (tmp_path / "taken").mkdir()
    loans.to_csv(tmp_path / "rows.csv", index=False)
    taken = job("--out", str(tmp_path / "taken"), "--public-key", str(keys[2]))
    assert taken.returncode == 2 and "exists" in taken.stderr
    other = signing.generate_key_pair(str(tmp_path / "other"))[1]
    wrong_key = job("--out", str(tmp_path / "out"), "--public-key", str(other))
    assert wrong_key.returncode == 2 and "not the configured key" in wrong_key.stderr
    assert not (tmp_path / "out").exists()
    assert "Started a local Ray" not in missing.stderr + taken.stderr + wrong_key.stderr
