"""The drift report from real capture files: the shifted feature comes first, labels give
accuracy, and the page renders in headless Chromium without the network."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sparc_ray.cli import main
from sparc_ray.data.captured import parse_since
from sparc_ray.data.loading import columns_from_frame, normalize_features
from sparc_ray.monitoring.capture import CaptureWriter
from sparc_ray.monitoring.drift import build_reference
from sparc_ray.monitoring.drift_report import build_report, render_html
from sparc_ray.registry import releases, signing
from sparc_ray.registry.layout import capture_root
from sparc_ray.registry.store import ModelRegistry
from sparc_ray.training.explain_check import check_explanations

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def captured(tmp_path, loans, trained_loans_model):
    """A version trained on loans, and 600 captured rows with `income` shifted by 2 sigma,
    half of them labelled."""
    model, X = trained_loans_model, loans.drop(columns="decision")
    predicted = model.predict(X)
    meta = {
        "gates": {"passed": True},
        "model_type": model.model_type,
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "reference": build_reference(X, model.schema, predicted, model.classes),
        "training_data": {"train_rows": len(X)},
        "metrics": {"holdout": {"accuracy": 0.9}},
        "explanations": check_explanations(model, X, X).to_metadata(),
    }
    reg = ModelRegistry(tmp_path / "store")
    version = reg.publish("loans", model, meta, signing_key=KEY)
    releases.promote(reg, "loans", version)
    shifted = X.copy()
    shifted["income"] += 2 * X["income"].std()
    names, kinds = [f.name for f in model.schema], [f.kind for f in model.schema]
    columns = columns_from_frame(normalize_features(shifted), names, kinds)
    proba = model.predict_proba(shifted[names])
    labels = [model.classes[i] for i in proba.argmax(axis=1)]
    writer = CaptureWriter(capture_root(str(tmp_path / "store"), "loans"), rate=1.0, flush_s=60)
    items = [{"prediction_id": f"p{i}", "n_rows": 1} for i in range(len(X))]
    writer.offer_predictions(version, items, columns, labels, proba)
    truth = loans["decision"].tolist()
    writer.offer_labels(
        [{"prediction_id": f"p{i}", "row": 0, "label": truth[i]} for i in range(300)]
    )
    writer.close()  # flushes
    assert writer.written == 900 and writer.dropped == 0
    return tmp_path / "store", version, labels, truth


def test_report_ranks_the_shifted_feature_first_and_scores_labels(captured):
    store, version, labels, truth = captured
    report = build_report(str(store), "loans")
    assert report["version"] == version and report["rows"] == 600
    top = report["features"][0]
    assert top.name == "income" and top.psi > 0.25 and top.p_value < 1e-6
    others = {f.name: f for f in report["features"][1:]}
    assert all(f.psi < 0.1 for f in others.values()), others
    expected = np.mean([a == b for a, b in zip(labels[:300], truth[:300], strict=True)])
    assert report["labelled"] == 300 and report["accuracy"] == pytest.approx(expected)


def test_mean_contributions_show_which_features_matter(captured):
    """With the public key, each feature's mean |contribution| over the captured rows (the
    signed version's explainer); without it, the report says why there are none."""
    store, *_ = captured
    report = build_report(str(store), "loans", public_key=signing.raw_public(KEY))
    weights = report["contributions"]
    assert weights is not None, report["contributions_note"]
    assert set(weights) == {f.name for f in report["features"]}
    assert all(w >= 0 for w in weights.values()) and max(weights.values()) > 0
    assert report["contributions_space"] == "probability"
    page = render_html(report)
    assert len(re.findall(r"<td class='weight'>[0-9.e-]+</td>", page)) == 5
    unsigned = build_report(str(store), "loans")
    assert unsigned["contributions"] is None and "public key" in unsigned["contributions_note"]
    assert "mean |contribution| not shown: no public key" in render_html(unsigned)


def test_cli_writes_a_report_that_renders_offline(captured, tmp_path, capsys):
    store, *_ = captured
    out = tmp_path / "report.html"
    assert (
        main(["report", "drift", "--store", str(store), "--name", "loans", "--out", str(out)]) == 0
    )
    assert "most drifted: income" in capsys.readouterr().out
    page = out.read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched
    assert page.count("data:image/png;base64,") >= 2
    if CHROMIUM is None:
        pytest.skip("no chromium: `bash .ci/install-apt.sh chromium chromium`")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += [f"--user-data-dir={tmp_path / 'chrome'}", "--proxy-server=http://127.0.0.1:9"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert re.search(r'id="top-feature">income<', dom), dom[:2000]
    assert len(re.findall(r"<tr class=", dom)) == 5  # one row per feature


def test_since_and_an_empty_window():
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("2026-11-27T00:00") == 1795737600.0
    with pytest.raises(ValueError, match="24h"):
        parse_since("yesterday")


def test_render_escapes_feature_names():
    from sparc_ray.monitoring.drift_report import FeatureDrift

    f = FeatureDrift(
        "<b>x</b>", "numeric", 0.3, 0.01, ["a", "b"], np.array([0.5, 0.5]), np.array([0.2, 0.8])
    )
    page = render_html(
        {
            "model": "m",
            "version": "v1",
            "rows": 10,
            "first": 0.0,
            "last": 1.0,
            "features": [f],
            "predictions": {"classes": ["a"], "reference": [1.0], "current": [1.0], "psi": 0.0},
            "labelled": 0,
            "accuracy": None,
            "holdout_accuracy": None,
            "contributions": {"<b>x</b>": 0.125},
            "contributions_note": None,
            "contributions_space": "log_odds",
        }
    )
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<td class='weight'>0.125</td>" in page
