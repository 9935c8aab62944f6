"""A batch that fails is scored request by request: only the culprit gets an error."""

import numpy as np

from sparc_ray.serving.loader import LoadedModel
from sparc_ray.serving.model import score_isolated


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
    current = LoadedModel(PickyScorer(), {"version": "v1", "classes": ["a", "b"]}, "test")
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
