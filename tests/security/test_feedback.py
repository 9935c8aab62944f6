"""Issue 18, item 6: ``/feedback`` labels are checked, matched and deduplicated before
anything is captured or counted. Played as an anonymous client holding the feedback token,
against the real Postprocessor and real capture files on disk."""

import asyncio
import time

import numpy as np

from sparc_ray.data.captured import read_labels
from sparc_ray.serving.messages import PostBatch, RequestMeta, ScoredGroup
from tests.postprocessors import Loader, local_postprocessor


def feed(tmp_path, *batches):
    """Score one prediction ``p1`` of 3 rows with capture on, post each feedback batch, and
    return the answers, the stats and the capture writer (flushed)."""

    async def scenario():
        post = await local_postprocessor(
            Loader(), {"capture_rate": 1.0, "capture_uri": str(tmp_path)}
        )
        proba = np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])
        labels = ["b", "a", "a"]
        group = ScoredGroup(
            "v1", (RequestMeta("p1", 3, False),), proba, labels, {"x": np.ones(3)}, 1.0
        )
        await post.record(PostBatch((group,), {}, "v1", False))
        answers = [await post.feedback(items) for items in batches]
        stats = await post.stats()
        post.capture.flush()
        post.tasks.cancel()
        return answers, stats, post.capture

    return asyncio.run(scenario())


def test_an_out_of_range_row_does_not_drop_the_honest_labels_batched_with_it(tmp_path):
    honest = [{"prediction_id": "p1", "row": 0, "label": "b"}]
    hostile = [
        {"prediction_id": "p1", "row": 2**40, "label": "b"},
        {"prediction_id": "p1", "row": "zero", "label": "b"},
        {"prediction_id": "p1", "row": True, "label": "b"},
        {"prediction_id": "p1", "row": -1, "label": "b"},
        {"prediction_id": "p1", "row": 3, "label": "b"},
    ]
    (answer,), _, capture = feed(tmp_path, hostile + honest)
    assert answer["matched"] == 1 and [i["index"] for i in answer["invalid"]] == [0, 1, 2, 3, 4]
    assert capture.dropped == capture.errors == 0
    labels = read_labels(str(tmp_path))
    assert labels[["prediction_id", "row", "label"]].values.tolist() == [["p1", 0, "b"]]


def test_labels_for_unknown_predictions_or_classes_are_never_captured(tmp_path):
    items = [
        {"prediction_id": "never-existed", "row": 0, "label": "a"},
        {"prediction_id": "p1", "row": 1, "label": "not-a-class"},
        {"prediction_id": {"$ne": None}, "row": 0, "label": "a"},
    ]
    (answer,), stats, _ = feed(tmp_path, items)
    assert answer["matched"] == 0 and answer["unknown"][0] == "never-existed"
    assert len(answer["unknown"]) == 2 and answer["invalid"][0]["index"] == 1
    assert stats["labelled_predictions"] == 0  # nothing counted in the accuracy
    assert read_labels(str(tmp_path)).empty


def test_the_first_label_of_a_row_wins_and_later_ones_are_conflicts(tmp_path):
    first = [{"prediction_id": "p1", "row": 2, "label": "a"}]
    later = [
        {"prediction_id": "p1", "row": 2, "label": "b"},
        {"prediction_id": "p1", "row": 2, "label": "a"},
    ]
    answers, stats, _ = feed(tmp_path, first, later)
    assert answers[0]["matched"] == 1 and answers[0]["conflicts"] == 0
    assert answers[1]["matched"] == 0 and answers[1]["conflicts"] == 2
    assert answers[1]["invalid"] == [] and stats["feedback_conflicts"] == 2
    assert answers[1]["accuracy"] == 1.0  # the first label ("a", predicted "a") stands
    labels = read_labels(str(tmp_path))
    assert labels[["prediction_id", "row", "label"]].values.tolist() == [["p1", 2, "a"]]
    assert len(list(tmp_path.rglob("*.parquet"))) == 2  # the prediction and one label file


def test_a_label_that_cannot_be_captured_drops_alone(tmp_path):
    """The writer itself: one record that cannot become a table does not take its
    partition's other records with it."""
    from sparc_ray.monitoring.capture import CaptureWriter

    writer = CaptureWriter(str(tmp_path), 1.0, flush_s=3600)
    writer.offer_labels([{"prediction_id": "p1", "row": 0, "label": "a"}])
    # Past the checks of offer_labels (as a bug upstream could): a row int32 cannot hold.
    writer._put(
        (
            "labels",
            None,
            {"prediction_id": ["p2"], "row": [2**40], "label": ["a"], "timestamp": time.time()},
        ),
        1,
    )
    writer.offer_labels([{"prediction_id": "p3", "row": 1, "label": "b"}])
    writer.close()
    labels = read_labels(str(tmp_path))
    assert sorted(labels["prediction_id"]) == ["p1", "p3"]
    assert writer.dropped == 1 and writer.errors == 1 and writer.written == 2


def test_retraining_reads_the_first_label_of_a_row(tmp_path):
    """Two labels for one row on disk (a replica restarted between them, forgetting the
    first): the first is what retraining sees, as /feedback decides."""
    from sparc_ray.monitoring.capture import CaptureWriter

    for label in ("a", "b"):
        writer = CaptureWriter(str(tmp_path), 1.0, flush_s=3600)
        writer.offer_labels([{"prediction_id": "p1", "row": 0, "label": label}])
        writer.close()
    assert read_labels(str(tmp_path))["label"].tolist() == ["a"]
