"""One bad input fails only itself: the failing rows of a batch are isolated by bisection,
a failure in monitoring never fails a prediction, and a replica whose background loop died
fails its health check."""

import asyncio

import numpy as np
import pytest

from sparc_ray.inference.isolation import score_isolating
from sparc_ray.inference.loader import LoadedModel
from sparc_ray.serving.messages import PostBatch, RequestMeta, RowFailure, ScoredGroup
from sparc_ray.serving.model import score_batch
from sparc_ray.serving.tasks import BackgroundTasks
from tests.postprocessors import BrokenReferenceLoader, local_postprocessor
from tests.unit.test_metadata import make_metadata


class PickyScorer:
    """A real computation (softmax of the value) that refuses one value, as a model might."""

    feature_names = ["x"]

    def __init__(self):
        self.calls = 0

    def predict_proba(self, columns):
        self.calls += 1
        x = columns["x"]
        if (x == 13.0).any():
            raise ValueError("cannot score 13")
        z = np.stack([x, -x], axis=1)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_only_the_request_with_the_bad_row_fails():
    current = LoadedModel(PickyScorer(), make_metadata(version="v1"), "test")
    # three requests: 2 rows, 3 rows (the middle row is bad), 1 row
    x = np.array([0.5, 1.0, 2.0, 13.0, 3.0, -1.0])
    scored = score_batch(current, {"x": x}, [2, 3, 1])
    assert list(scored.failed) == [1]
    assert scored.failed[1] == RowFailure(row=1, message="cannot score 13")
    good = np.r_[0:2, 5]
    np.testing.assert_allclose(
        scored.proba[good], PickyScorer().predict_proba({"x": x[good]}), rtol=0
    )
    assert np.isnan(scored.proba[2:5]).all()


@pytest.mark.parametrize("bad_rows", [[], [0], [999], [3, 500, 501, 998]])
def test_bisection_finds_every_failing_row_and_scores_the_rest(bad_rows):
    x = np.linspace(-2, 2, 1000)
    x[bad_rows] = 13.0
    scorer = PickyScorer()
    isolated = score_isolating(scorer.predict_proba, {"x": x}, n_classes=2)
    assert list(isolated.failed) == bad_rows
    assert set(isolated.failed.values()) <= {"cannot score 13"}
    good = np.setdiff1d(np.arange(1000), bad_rows)
    np.testing.assert_allclose(isolated.proba[good], PickyScorer().predict_proba({"x": x[good]}))
    assert np.isnan(isolated.proba[bad_rows]).all()
    # One call when nothing fails; about 2·k·log2(n) when k rows fail, not n.
    assert scorer.calls <= 1 + 2 * len(bad_rows) * 10


def test_a_monitoring_failure_is_counted_and_the_labels_still_match():
    async def scenario():
        post = await local_postprocessor(BrokenReferenceLoader())
        requests = (RequestMeta("p1", 2, True),)
        proba = np.array([[0.2, 0.8], [0.9, 0.1]])
        columns = {"x": np.array([1.0, 2.0])}
        await post.record(
            PostBatch(
                (ScoredGroup("v1", requests, proba, ["b", "a"], columns, 1.0),), {}, "v1", False
            )
        )
        post.release.update(await post.watcher.refresh())
        stats = await post.stats()  # folds the queued batch into monitoring: drift raises
        feedback = await post.feedback([{"prediction_id": "p1", "row": 0, "label": "b"}])
        post.tasks.cancel()
        return stats, feedback

    stats, feedback = asyncio.run(scenario())
    assert stats["monitoring_errors"] == 1 and stats["remembered_predictions"] == 1
    assert feedback["matched"] == 1 and feedback["accuracy"] == 1.0


def test_the_feedback_store_is_bounded_by_rows_not_requests():
    async def scenario():
        post = await local_postprocessor(BrokenReferenceLoader(), {"feedback_rows": 2500})
        for i in range(10):  # 10 requests x 1000 rows
            post.feedback_store.remember(f"p{i}", ["a"] * 1000, "v1")
        stats = await post.stats()
        post.tasks.cancel()
        return stats, list(post.feedback_store.recent)

    stats, kept = asyncio.run(scenario())
    assert stats["remembered_rows"] == 2000 and kept == ["p8", "p9"]


def test_a_dead_background_task_fails_the_health_check():
    async def scenario():
        tasks = BackgroundTasks()

        async def loop_that_dies():
            raise OSError("disk gone")

        async def loop_forever():
            await asyncio.Event().wait()

        tasks.start("forever", loop_forever())
        tasks.start("dies", loop_that_dies())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="'dies' ended: OSError"):
            tasks.check()
        tasks.cancel()

    asyncio.run(scenario())


def test_each_deployment_fails_its_health_check_when_a_loop_is_killed():
    """The real Postprocessor: its loops run; killing one makes check_health raise."""

    async def scenario():
        post = await local_postprocessor(BrokenReferenceLoader())
        await post.check_health()  # every loop alive
        post.tasks._tasks["monitor"].cancel()
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="'monitor' ended"):
            await post.check_health()
        post.tasks.cancel()

    asyncio.run(scenario())
