"""The registry and the data loader on an S3-compatible object store: moto's standalone server
(real HTTP, real S3 API), started by this module; pyarrow's S3 filesystem talks to it through
``endpoint_override`` exactly as it would to MinIO or AWS."""

from __future__ import annotations

import numpy as np
import pytest

from sparc_ray.data.loading import columns_from_frame, data_version, load_dataset
from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import releases, signing, storage
from sparc_ray.registry.artifacts import IntegrityError
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.config import CVConfig, SearchConfig
from sparc_ray.training.onnx_export import export_onnx
from sparc_ray.training.search_result import run_search
from sparc_ray.training.tuning import build_tuner, latest_experiment
from tests.integration.cluster import in_process_ray
from tests.integration.models import load_verified
from tests.s3_server import running_s3

BUCKET, NAME = "models", "loans"
PASSED = {"gates": {"passed": True, "failed": []}}


@pytest.fixture(scope="module")
def s3():
    """(endpoint, boto3 client) of a fresh S3 server with one bucket."""
    with running_s3() as (endpoint, client):
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client


def uri(s3, path: str) -> str:
    return f"s3://{BUCKET}/{path}?endpoint_override={s3[0]}&scheme=http"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    private, public = signing.generate_key_pair(tmp_path_factory.mktemp("keys") / "k")
    return signing.load_private_key(str(private)), signing.public_key_bytes(str(public))


@pytest.fixture(scope="module")
def published(s3, keys, trained_loans_model, loans):
    """Two signed versions (ONNX, and one served by the sklearn fallback) on S3."""
    X = loans.drop(columns="decision")
    data, report = export_onnx(trained_loans_model, X.head(100))
    meta = {
        **PASSED,
        "classes": trained_loans_model.classes,
        "features": [f.to_dict() for f in trained_loans_model.schema],
    }
    reg = ModelRegistry(uri(s3, "registry"))
    onnx = reg.publish(
        NAME,
        trained_loans_model,
        {**meta, "onnx": report},
        {report["file"]: data, "report/metrics.json": b"{}"},
        signing_key=keys[0],
    )
    fallback = reg.publish(
        NAME,
        trained_loans_model,
        {**meta, "onnx": {"status": "fallback", "reason": "for a test"}},
        signing_key=keys[0],
    )
    return reg, onnx, fallback, X.head(30)


def test_publish_lists_verifies_and_loads_from_s3(published, keys, trained_loans_model, s3):
    reg, onnx, fallback, X = published
    assert reg.names() == [NAME] and reg.versions(NAME) == [onnx, fallback]
    keys_written = {
        o["Key"] for o in s3[1].list_objects_v2(Bucket=BUCKET, Prefix="registry/")["Contents"]
    }
    assert f"registry/{NAME}/{onnx}/signature.json" in keys_written
    assert not [k for k in keys_written if ".staging" in k]  # no rename on an object store
    loader = RegistryLoader(reg.store, NAME, keys[1])
    expected = trained_loans_model.predict_proba(X)
    for version, engine in ((onnx, "onnx"), (fallback, "sklearn")):
        assert reg.verify(NAME, version, keys[1]).version == version
        loaded = loader.load(version)
        kinds = loaded.metadata.feature_kinds
        proba = loaded.scorer.predict_proba(columns_from_frame(X, list(X.columns), kinds))
        assert loaded.engine == engine
        np.testing.assert_allclose(proba, expected, atol=1e-5)
    model, meta = load_verified(reg, NAME, onnx, keys[1])
    assert meta.version == onnx and (model.predict(X) == trained_loans_model.predict(X)).all()


def test_promote_release_and_rollback_on_s3(published):
    reg, onnx, fallback, _ = published
    releases.promote(reg, NAME, onnx)
    assert reg.alias(NAME) == onnx
    release = releases.start_release(reg, NAME, fallback, "canary", weight=25)
    assert releases.current_release(reg, NAME).id == release.id
    assert releases.finish_release(reg, NAME, release.id, "promoted", "test")
    assert not releases.finish_release(reg, NAME, release.id, "rolled_back", "too late")
    assert reg.alias(NAME) == fallback and releases.current_release(reg, NAME) is None
    assert [e["event"] for e in releases.release_log(reg, NAME)] == ["started", "promoted"]
    assert releases.rollback(reg, NAME) == onnx and reg.alias(NAME) == onnx


def test_a_tampered_object_is_refused(published, keys, s3):
    reg, onnx, _, _ = published
    key = f"registry/{NAME}/{onnx}/model.onnx"
    original = s3[1].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3[1].put_object(Bucket=BUCKET, Key=key, Body=original[:-4] + b"evil")
    try:
        with pytest.raises(IntegrityError, match="sha256"):
            reg.verify(NAME, onnx)
        with pytest.raises(signing.SignatureError, match="changed after"):
            RegistryLoader(reg.store, NAME, keys[1]).load(onnx)
        with pytest.raises(IntegrityError):
            releases.promote(reg, NAME, onnx, public_key=keys[1])
    finally:
        s3[1].put_object(Bucket=BUCKET, Key=key, Body=original)
    reg.verify(NAME, onnx, keys[1])


def test_a_version_without_metadata_is_not_a_version(published, s3):
    reg, onnx, fallback, _ = published
    s3[1].put_object(Bucket=BUCKET, Key=f"registry/{NAME}/v-half/model.joblib", Body=b"x")
    assert reg.versions(NAME) == [onnx, fallback]


def test_datasets_and_experiment_locations_on_s3(s3, loans):
    s3[1].put_object(Bucket=BUCKET, Key="data/loans.csv", Body=loans.to_csv(index=False).encode())
    df, _ = load_dataset(uri(s3, "data/loans.csv"))
    assert df.shape == loans.shape and list(df.columns) == list(loans.columns)
    for exp in ("loans-20261101-000000", "loans-20261127-101010", "other-20261201-000000"):
        s3[1].put_object(Bucket=BUCKET, Key=f"tune/{exp}/tuner.pkl", Body=b"x")
    found = latest_experiment(uri(s3, "tune"), "loans")
    assert found == uri(s3, "tune/loans-20261127-101010")  # the URI's options are kept
    fs, path = storage.open_fs(found)
    assert fs.get_file_info(f"{path}/tuner.pkl").size == 1


@pytest.mark.cluster
def test_batch_scoring_from_and_to_s3(published, keys, s3, loans):
    """Ray Data reads the rows from S3 and writes predictions, rejects and summary there."""
    import pandas as pd

    from sparc_ray.batch.job import ScorePlan, run

    reg, onnx, _, _ = published
    rows = loans.drop(columns="decision").astype({"age": object})
    rows.loc[4, "age"] = "old"
    s3[1].put_object(Bucket=BUCKET, Key="batch/rows.csv", Body=rows.to_csv(index=False).encode())
    out = uri(s3, "batch/scores")
    plan = ScorePlan.check(uri(s3, "batch/rows.csv"), NAME, reg.store, out, onnx, keys[1])
    with in_process_ray(num_cpus=2):
        summary = run(plan)
    assert (summary["scored"], summary["rejected"]) == (599, 1)
    fs, path = storage.open_fs(out)
    predictions = pd.read_parquet(f"{path}/predictions", filesystem=fs).sort_values("row_id")
    rejects = pd.read_parquet(f"{path}/rejects", filesystem=fs)
    assert rejects[["row_id", "feature"]].values.tolist() == [[4, "age"]]
    good = rows.drop(index=4).astype({"age": float})
    loaded = RegistryLoader(reg.store, NAME, keys[1]).load(onnx)
    names, kinds = loaded.metadata.feature_names, loaded.metadata.feature_kinds
    proba = loaded.scorer.predict_proba(columns_from_frame(good, names, kinds))
    assert predictions.row_id.tolist() == good.index.tolist()
    cols = [f"proba_{c}" for c in loaded.metadata.classes]
    np.testing.assert_allclose(predictions[cols].to_numpy(), proba, atol=1e-12)
    with pytest.raises(Exception, match="exists"):  # never overwritten
        ScorePlan.check(uri(s3, "batch/rows.csv"), NAME, reg.store, out, onnx, keys[1])


def test_traffic_capture_to_s3_and_back(s3, loans):
    """The serving side's writer and the report / retraining readers on an object store."""
    from sparc_ray.data.captured import labelled_rows, read_predictions
    from sparc_ray.monitoring.capture import CaptureWriter

    root = uri(s3, "captures/loans")
    writer = CaptureWriter(root, 1.0, flush_s=60)
    X = loans.drop(columns="decision").head(40)
    items = [{"prediction_id": f"p{i}", "n_rows": 2} for i in range(20)]
    columns = {n: X[n].to_numpy() for n in X.columns}
    writer.offer_predictions("v1", items, columns, ["review"] * 40, np.full((40, 3), 1 / 3))
    writer.offer_labels([{"prediction_id": "p3", "row": 1, "label": "approved"}])
    writer.close()
    assert writer.written == 41 and writer.dropped == 0
    rows = read_predictions(root)
    assert len(rows) == 40 and set(rows.model_version) == {"v1"}
    assert rows.sort_values(["prediction_id", "row"]).income.notna().sum() == X.income.notna().sum()
    (labelled,) = labelled_rows(root).itertuples()
    assert (labelled.prediction_id, labelled.row, labelled.label) == ("p3", 1, "approved")
    keys = [o["Key"] for o in s3[1].list_objects_v2(Bucket=BUCKET, Prefix="captures/")["Contents"]]
    assert any("/predictions/capture_date=" in k and "/model_version=v1/" in k for k in keys)


def test_data_version_of_an_object_in_a_versioned_bucket(s3, loans):
    s3[1].create_bucket(Bucket="versioned")
    s3[1].put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    body = loans.to_csv(index=False).encode()
    first = s3[1].put_object(Bucket="versioned", Key="loans.csv", Body=body)["VersionId"]
    second = s3[1].put_object(Bucket="versioned", Key="loans.csv", Body=body + b"\n")["VersionId"]
    location = f"s3://versioned/loans.csv?endpoint_override={s3[0]}&scheme=http"
    found = data_version(location)
    assert found["kind"] == "s3" and found["version_id"] == second != first
    assert data_version(uri(s3, "data/loans.csv")) is None  # an unversioned bucket


@pytest.mark.cluster
def test_tune_experiments_on_s3_resume_without_rerunning_trials(s3, loans):
    """The search's experiment storage on the S3 server: a finished search, then the same
    search resumed from its experiment there (Tuner.restore) runs no trial again."""

    search = SearchConfig(
        space={"logistic_regression": {"C": [0.1, 1.0]}},
        sampler="grid",
        num_samples=1,
        scheduler="fifo",
        asha={"grace_period": 1, "reduction_factor": 3},
        cpus_per_fold=1,
        max_concurrent_trials=None,
        storage_path=uri(s3, "tune"),
    )
    cv = CVConfig(n_folds=2, scoring="accuracy")
    X, y = loans.drop(columns="decision"), loans["decision"]
    with in_process_ray(num_cpus=2):
        first = run_search(build_tuner(X, y, search, cv, "loans-20261127-120000"), 2)
        resume = latest_experiment(search.storage_path, "loans")
        assert resume == uri(s3, "tune/loans-20261127-120000")
        again = run_search(build_tuner(X, y, search, cv, "unused", resume_path=resume), 2)
    assert again.best["label"] == first.best["label"]
    assert again.best["cv_mean"] == first.best["cv_mean"]
    assert {t["trial_id"] for t in again.trials} == {t["trial_id"] for t in first.trials}
    listed = s3[1].list_objects_v2(Bucket=BUCKET, Prefix="tune/loans-20261127-120000/")
    assert any(o["Key"].endswith("result.json") for o in listed["Contents"])
