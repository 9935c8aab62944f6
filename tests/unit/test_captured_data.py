"""Retraining data from captures of a model whose target is not called `target`: a signed
production version predicting `diagnosis` ("benign" / "malignant") on its own features, real
capture files (CaptureWriter) from it and from an older version with other features, read back
as a training frame through the signature check. No Ray."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from sparc_ray.data.captured import load_capture_dataset
from sparc_ray.data.loading import DataError, load_dataset
from sparc_ray.monitoring.capture import CaptureWriter
from sparc_ray.registry import releases, signing
from sparc_ray.registry.layout import capture_root
from sparc_ray.registry.store import ModelRegistry

NAME, OLD, PRODUCTION = "tumours", "v1-old", "v2-production"
OLD_FEATURES = ["mean radius", "mean texture", "mean area"]
FEATURES = ["mean radius", "mean texture", "worst concavity", "mean smoothness"]
N_CAPTURED, N_LABELLED = 120, 80


@pytest.fixture(scope="module")
def tumours(tmp_path_factory):
    """diagnosis.csv (target `diagnosis`, string labels) and a model per feature set."""
    from sparc_ray.training.estimator import SPARCClassificationModel

    work = tmp_path_factory.mktemp("tumours")
    df, target = load_dataset("builtin:breast_cancer")
    df = df.rename(columns={target: "diagnosis"})
    df.to_csv(work / "diagnosis.csv", index=False)
    models = {}
    for version, features in ((OLD, OLD_FEATURES), (PRODUCTION, FEATURES)):
        config = {"model_type": "random_forest", "model": {"n_estimators": 10}}
        models[version] = SPARCClassificationModel(config).fit(df[features], df["diagnosis"])
    return work, df, models


@pytest.fixture
def store(tmp_path, tumours):
    """Both versions published signed, the second in production; each served some rows:
    the older version's capture files come first and lack two production features."""
    work, df, models = tumours
    private, public = signing.generate_key_pair(tmp_path / "key")
    key = signing.load_private_key(str(private))
    reg = ModelRegistry(tmp_path / "store")
    for version, model in models.items():
        meta = {
            "gates": {"passed": True},
            "target": "diagnosis",
            "classes": model.classes,
            "features": [f.to_dict() for f in model.schema],
            "training_data": {"source": str(work / "diagnosis.csv")},
        }
        reg.publish(NAME, model, meta, version=version, signing_key=key)
    releases.promote(reg, NAME, PRODUCTION)
    writer = CaptureWriter(capture_root(reg.store, NAME), rate=1.0, flush_s=60)
    for version, model in models.items():
        served = df[model.feature_names].head(N_CAPTURED)
        proba = model.predict_proba(served)
        items = [{"prediction_id": f"{version}-{i}", "n_rows": 1} for i in range(N_CAPTURED)]
        columns = {n: served[n].to_numpy(dtype=float) for n in model.feature_names}
        writer.offer_predictions(version, items, columns, model.predict(served).tolist(), proba)
    writer.offer_labels(
        [
            {"prediction_id": f"{PRODUCTION}-{i}", "row": 0, "label": df["diagnosis"][i]}
            for i in range(N_LABELLED)
        ]
    )
    writer.close()
    assert writer.written == 2 * N_CAPTURED + N_LABELLED and writer.dropped == 0
    return reg, signing.public_key_bytes(str(public)), key


def test_the_frame_has_productions_target_labels_and_exactly_its_features(store, tumours):
    reg, public, _ = store
    _, df, _ = tumours
    frame, target = load_capture_dataset(f"{reg.store}/{NAME}", public_key=public)
    assert target == "diagnosis"
    assert list(frame.columns) == [*FEATURES, "diagnosis"]
    assert len(frame) == N_LABELLED and set(frame.diagnosis) == {"benign", "malignant"}
    expected = df[[*FEATURES, "diagnosis"]].head(N_LABELLED)
    got = frame.sort_values("mean radius", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got, expected.sort_values("mean radius", kind="stable").reset_index(drop=True)
    )


def test_productions_training_data_can_be_added(store, tumours):
    reg, public, _ = store
    _, df, _ = tumours
    both, target = load_capture_dataset(
        f"{reg.store}/{NAME}", with_training_data=True, public_key=public
    )
    assert target == "diagnosis" and list(both.columns) == [*FEATURES, "diagnosis"]
    assert len(both) == len(df) + N_LABELLED
    assert set(both.diagnosis) == {"benign", "malignant"}


def test_production_metadata_is_read_through_the_signature_check(store, tmp_path, caplog):
    reg, public, _ = store
    location = f"{reg.store}/{NAME}"
    path = tmp_path / "store" / NAME / PRODUCTION / "metadata.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "target": "mean area"}))  # altered after signing
    with pytest.raises(DataError, match="changed after the version was signed"):
        load_capture_dataset(location, public_key=public)
    _, other = signing.generate_key_pair(tmp_path / "other")
    with pytest.raises(DataError, match="not the configured key"):
        load_capture_dataset(location, public_key=signing.public_key_bytes(str(other)))
    with caplog.at_level(logging.WARNING, "sparc_ray.data.captured"):  # no key: read, logged
        assert load_capture_dataset(location)[1] == "mean area"
    assert "without a signature check" in caplog.text


def test_a_label_that_is_not_a_class_is_a_clear_error(store):
    reg, public, _ = store
    writer = CaptureWriter(capture_root(reg.store, NAME), rate=1.0, flush_s=60)
    writer.offer_labels(
        [
            {"prediction_id": f"{PRODUCTION}-{i}", "label": "benine"}
            for i in (N_LABELLED, N_LABELLED + 1)
        ]
    )
    writer.close()
    with pytest.raises(DataError, match=r"2 labelled rows .* 'benine' \(2\)"):
        load_capture_dataset(f"{reg.store}/{NAME}", public_key=public)


def test_numeric_classes_come_back_as_numbers(tmp_path, tumours):
    from sparc_ray.training.estimator import SPARCClassificationModel

    _, df, _ = tumours
    y = (df["diagnosis"] == "malignant").astype(int)
    config = {"model_type": "logistic_regression", "model": {}}
    model = SPARCClassificationModel(config).fit(df[FEATURES], y)
    meta = {
        "gates": {"passed": True},
        "target": "malignant",
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
    }
    reg = ModelRegistry(tmp_path / "store")
    releases.promote(reg, "m", reg.publish("m", model, meta, version="v1"))
    writer = CaptureWriter(capture_root(reg.store, "m"), rate=1.0, flush_s=60)
    served = df[FEATURES].head(10)
    columns = {n: served[n].to_numpy(dtype=float) for n in FEATURES}
    items = [{"prediction_id": f"p{i}", "n_rows": 1} for i in range(10)]
    writer.offer_predictions("v1", items, columns, [0] * 10, np.full((10, 2), 0.5))
    writer.offer_labels([{"prediction_id": f"p{i}", "label": int(y[i])} for i in range(10)])
    writer.close()
    frame, target = load_capture_dataset(f"{reg.store}/m")
    assert target == "malignant" and model.classes == [0, 1]
    assert frame.malignant.tolist() == y.head(10).tolist() and frame.malignant.dtype.kind == "i"


def test_the_training_job_prepares_captured_rows_with_productions_target(store, tmp_path):
    """The job's own entry (config from tune/default.yaml, whose `target: target` names
    another dataset's label) reads the captures with production's `diagnosis` target."""
    import argparse

    from sparc_ray.training.job import prepare_data
    from sparc_ray.training.job_args import add_train_arguments, load_config
    from tests.conftest import ROOT

    reg, public, _ = store
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    argv = ["--config", str(ROOT / "tune/default.yaml"), "--name", NAME]
    cfg = load_config(parser.parse_args([*argv, "--data", f"capture:{reg.store}/{NAME}"]))
    prepared = prepare_data(cfg, public)
    assert prepared.target == "diagnosis" and list(prepared.X.columns) == FEATURES
    assert len(prepared.y) == N_LABELLED and set(prepared.y) == {"benign", "malignant"}
