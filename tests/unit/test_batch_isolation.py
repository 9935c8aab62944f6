"""One bad input fails only itself: a batch that raises is scored request by request, and a
failure in monitoring never fails a prediction."""

import asyncio

import numpy as np

from sparc_ray.inference.loader import LoadedModel
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.model import score_isolated
from sparc_ray.serving.postprocessor import Postprocessor
from tests.unit.test_metadata import make_metadata


class PickyScorer:
    """A real computation (softmax of the value) that refuses one value, as a model might."""

    feature_names = ["x"]

    def predict_proba(self, columns):
        x = columns["x"]
        if (x == 13.0).any():
            raise ValueError("cannot score 13")
        z = np.stack([x, -x], axis=1)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_only_the_request_with_the_bad_row_fails():
    current = LoadedModel(PickyScorer(), make_metadata(version="v1"), "test")
    # three requests: 2 rows, 3 rows (the middle row is bad), 1 row
    x = np.array([0.5, 1.0, 2.0, 13.0, 3.0, -1.0])
    scored = score_isolated(current, {"x": x}, [2, 3, 1])
    assert list(scored.failed) == [1]
    assert scored.failed[1] == {"row": 1, "message": "cannot score 13"}
    good = np.r_[0:2, 5]
    np.testing.assert_allclose(
        scored.proba[good], PickyScorer().predict_proba({"x": x[good]}), rtol=0
    )
    assert np.isnan(scored.proba[2:5]).all()


class BrokenReferenceLoader:
    """Metadata whose drift reference cannot be used: drift monitoring raises."""

    name = "m"
    registry = None

    def release_state(self):
        return "v1", None

    def load_metadata(self, version):
        # Unvalidated, as a file that passed the schema but breaks monitoring would be.
        return ModelMetadata.model_construct(
            version=version, classes=["a", "b"], reference={"broken": True}
        )


def test_a_monitoring_failure_is_counted_and_never_fails_the_prediction():
    async def scenario():
        cls = Postprocessor.func_or_class
        post = cls.__new__(cls)
        await post.__init__(None, BrokenReferenceLoader())
        items = [{"prediction_id": "p1", "n_rows": 2, "include_probabilities": True}]
        proba = np.array([[0.2, 0.8], [0.9, 0.1]])
        group = {"version": "v1", "items": items, "proba": proba, "model_ms": 1.0}
        (bodies,) = await post.process(
            [{**group, "columns": {"x": np.array([1.0, 2.0])}}], {}, False
        )
        post.release.update(await post.watcher.refresh())
        stats = await post.stats()  # folds the queued batch into monitoring: drift raises
        feedback = await post.feedback([{"prediction_id": "p1", "row": 0, "label": "b"}])
        for task in post._tasks:
            task.cancel()
        return bodies, stats, feedback

    bodies, stats, feedback = asyncio.run(scenario())
    assert bodies == [
        {
            "predictions": ["b", "a"],
            "probabilities": [[0.2, 0.8], [0.9, 0.1]],
            "classes": ["a", "b"],
            "model_version": "v1",
        }
    ]
    assert stats["monitoring_errors"] == 1 and stats["remembered_predictions"] == 1
    assert feedback["matched"] == 1 and feedback["accuracy"] == 1.0


def test_the_feedback_store_is_bounded_by_rows_not_requests():
    async def scenario():
        cls = Postprocessor.func_or_class
        post = cls.__new__(cls)
        await post.__init__(None, BrokenReferenceLoader())
        await post.reconfigure({"feedback_rows": 2500})
        for i in range(10):  # 10 requests x 1000 rows
            post._remember(f"p{i}", ["a"] * 1000, "v1")
        stats = await post.stats()
        for task in post._tasks:
            task.cancel()
        return stats, list(post._recent)

    stats, kept = asyncio.run(scenario())
    assert stats["remembered_rows"] == 2000 and kept == ["p8", "p9"]
