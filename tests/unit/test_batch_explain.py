"""``jobs/score.py --explain``: a scoring actor adds each scored row's feature contributions
from the signed version's explainer; rejected rows get none, and an unsigned or unexplainable
version is refused before Ray starts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sparc_ray.batch.job import ScorePlan
from sparc_ray.batch.scorer import BatchScorer
from sparc_ray.batch.source import InputError
from sparc_ray.inference.explain import load_explainer
from sparc_ray.registry import signing
from sparc_ray.training.explain_check import check_explanations
from tests.unit.test_explain import publish


@pytest.fixture
def signed(tmp_path, loans, trained_loans_model):
    key = Ed25519PrivateKey.generate()
    X = loans.drop(columns="decision")
    entry = check_explanations(trained_loans_model, X.iloc[:200], X).to_metadata()
    reg, version = publish(tmp_path, trained_loans_model, entry, key=key)
    return reg, version, signing.raw_public(key), X


def test_scored_rows_carry_contributions_that_add_up(signed, tmp_path):
    reg, version, public, X = signed
    rows = X.head(20).astype({"age": object})
    rows.loc[rows.index[3], "age"] = "old"  # rejected: no prediction, no explanation
    batch = pa.Table.from_pandas(rows.astype({"age": str}), preserve_index=False)
    batch = batch.append_column("row_id", pa.array(range(20), pa.int64()))
    (tmp_path / "rej").mkdir()
    scorer = BatchScorer(str(reg.root_path), "loans", version, public, str(tmp_path / "rej"), True)
    out = scorer(batch).to_pandas()
    assert out["row_id"].tolist() == [i for i in range(20) if i != 3]
    kept = X.head(20).drop(index=X.index[3])
    expected = load_explainer(reg, "loans", version, public).explain(kept)
    contrib = out[[f"contribution_{f}" for f in expected.feature_names]].to_numpy()
    np.testing.assert_allclose(contrib, expected.contributions, atol=1e-12)
    np.testing.assert_allclose(out["base_value"], expected.base_values, atol=1e-12)
    assert out["explained_class"].tolist() == out["prediction"].tolist()  # multiclass: predicted


def test_explain_is_refused_before_scoring_when_it_cannot_be_honoured(signed, tmp_path):
    reg, version, public, _ = signed
    data, store = str(tmp_path / "x.csv"), str(reg.root_path)
    signed[3].head(5).to_csv(data, index=False)
    with pytest.raises(InputError, match="--public-key"):
        ScorePlan.check(data, "loans", store, str(tmp_path / "o1"), version, None, explain=True)
    plan = ScorePlan.check(data, "loans", store, str(tmp_path / "o2"), version, public, True)
    assert plan.explain
