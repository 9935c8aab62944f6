"""Traffic capture without Ray: sampling, bounded queue, a failing sink, and training frames
built from labelled captures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparc_ray.data.captured import (
    labelled_rows,
    load_capture_dataset,
    read_labels,
    read_predictions,
    split_capture_location,
)
from sparc_ray.data.loading import DataError
from sparc_ray.monitoring.capture import CaptureWriter
from sparc_ray.registry import releases
from sparc_ray.registry.layout import capture_root
from sparc_ray.registry.store import ModelRegistry


def batch(n: int, start: int = 0):
    items = [{"prediction_id": f"p{start + i}", "n_rows": 2} for i in range(n)]
    columns = {"x": np.arange(2.0 * n), "c": np.array(["a", None] * n, dtype=object)}
    proba = np.tile([[0.2, 0.8]], (2 * n, 1))
    return items, columns, ["yes"] * (2 * n), proba


def test_requests_are_sampled_whole_and_rows_keep_their_position(tmp_path):
    writer = CaptureWriter(str(tmp_path), rate=0.5, flush_s=60)
    writer.offer_predictions("v1", *batch(2000))
    writer.close()
    rows = read_predictions(str(tmp_path))
    per_request = rows.groupby("prediction_id").row.apply(sorted)
    assert all(r == [0, 1] for r in per_request)  # both rows of a sampled request
    assert 800 < len(per_request) < 1200  # about half the requests
    first = rows[rows.prediction_id == per_request.index[0]].sort_values("row")
    n = int(per_request.index[0][1:])
    assert first.x.tolist() == [2.0 * n, 2.0 * n + 1] and first.c.isna().tolist() == [False, True]
    assert set(rows.model_version) == {"v1"} and rows.probabilities.iloc[0].tolist() == [0.2, 0.8]


def test_a_full_queue_and_a_failing_sink_drop_and_count_then_capture_resumes(tmp_path):
    drops: list[tuple[int, str]] = []
    sink = tmp_path / "sink"
    writer = CaptureWriter(
        str(sink), 1.0, flush_s=60, max_queued_rows=10, on_drop=lambda n, r: drops.append((n, r))
    )
    writer.offer_predictions("v1", *batch(4))  # 8 rows: queued
    writer.offer_predictions("v1", *batch(4, 4))  # 8 more: over the bound, dropped
    assert drops == [(8, "queue_full")]
    sink.write_text("a file where the capture directory should be")  # unwritable, even for root
    writer.flush()
    assert drops[-1] == (8, "write_failed") and writer.written == 0
    sink.unlink()  # the sink is back
    writer.offer_predictions("v1", *batch(4, 8))
    writer.flush()
    assert writer.written == 8 and writer.dropped == 16
    writer.close()


def test_training_frame_from_labelled_captures(tmp_path, loans, trained_loans_model):
    store = tmp_path / "store"
    model = trained_loans_model
    X = loans.drop(columns="decision")
    meta = {
        "gates": {"passed": True},
        "target": "decision",
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "training_data": {"source": str(tmp_path / "train.csv")},
    }
    loans.to_csv(tmp_path / "train.csv", index=False)
    reg = ModelRegistry(store)
    releases.promote(reg, "loans", reg.publish("loans", model, meta))
    root = capture_root(str(store), "loans")
    with pytest.raises(DataError, match="no captured rows with a /feedback label"):
        load_capture_dataset(f"{store}/loans")
    writer = CaptureWriter(root, 1.0, flush_s=60)
    items = [{"prediction_id": f"p{i}", "n_rows": 1} for i in range(50)]
    columns = {n: X[n].head(50).to_numpy() for n in X.columns}
    writer.offer_predictions("v", items, columns, ["x"] * 50, np.full((50, 3), 1 / 3))
    writer.offer_labels(
        [{"prediction_id": f"p{i}", "row": 0, "label": "review"} for i in range(20)]
    )
    writer.close()
    assert len(labelled_rows(root)) == 20
    frame, target = load_capture_dataset(f"{store}/loans")
    assert target == "decision" and list(frame.columns) == [*X.columns, "decision"]
    pd.testing.assert_frame_equal(
        frame[list(X.columns)], X.head(20), check_dtype=False, check_index_type=False
    )
    assert set(frame.decision) == {"review"}
    both, _ = load_capture_dataset(f"{store}/loans", with_training_data=True)
    assert len(both) == len(loans) + 20
    assert split_capture_location("s3://b/m/loans?scheme=http") == ("s3://b/m?scheme=http", "loans")


def test_capture_never_raises_into_a_request_and_counts_what_failed(tmp_path):
    drops: list[tuple[int, str]] = []

    def broken_on_write(n: int, version: str) -> None:
        raise RuntimeError("metrics backend down")

    writer = CaptureWriter(
        str(tmp_path), 1.0, flush_s=60, on_drop=lambda n, r: drops.append((n, r)),
        on_write=broken_on_write,
    )  # fmt: skip
    items, columns, labels, proba = batch(3)
    writer.offer_predictions("v1", items, {"x": columns["x"][:2]}, labels, proba)  # rows missing
    assert (writer.errors, drops) == (1, [(6, "error")])
    writer.offer_labels(
        [
            {"prediction_id": "p0", "row": "first", "label": "yes"},
            {"prediction_id": "p0", "row": True, "label": "yes"},
            {"prediction_id": "p0", "row": 1, "label": "no"},
        ]
    )
    assert writer.skipped == 2
    writer.flush()  # written, though on_write raised: counted as an error, not as a drop
    assert (writer.written, writer.errors, writer.dropped) == (1, 2, 6)
    assert read_labels(str(tmp_path))[["prediction_id", "row", "label"]].values.tolist() == [
        ["p0", 1, "no"]
    ]

    def broken_on_drop(n: int, reason: str) -> None:
        raise RuntimeError("metrics backend down")

    full = CaptureWriter(str(tmp_path), 1.0, flush_s=60, max_queued_rows=1, on_drop=broken_on_drop)
    full.offer_predictions("v1", *batch(1))
    assert (full.dropped, full.errors) == (2, 1)
    writer.close()
    full.close()


def test_capture_files_that_disagree_or_are_missing(tmp_path):
    (tmp_path / "empty" / "predictions").mkdir(parents=True)  # every write failed
    assert read_predictions(str(tmp_path / "empty")).empty
    assert labelled_rows(str(tmp_path / "empty")).empty
    writer = CaptureWriter(str(tmp_path / "c"), 1.0, flush_s=60)
    items, columns, labels, proba = batch(2)
    writer.offer_predictions("v1", items, columns, labels, proba)
    writer.flush()
    as_text = {"x": columns["x"].astype(str).astype(object), "c": columns["c"]}
    writer.offer_predictions("v2", items, as_text, labels, proba)  # `x` changed kind
    writer.close()
    with pytest.raises(DataError, match="do not agree"):
        read_predictions(str(tmp_path / "c"))
