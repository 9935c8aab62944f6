"""Batch scoring without Ray: per-cell checks, the model-error search, and the input listing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sparc_ray.batch.scorer import BatchScorer, check_batch
from sparc_ray.batch.source import InputError, RowSource
from sparc_ray.inference.input_rules import FeatureCheck
from sparc_ray.inference.loader import LoadedModel
from tests.unit.test_metadata import make_metadata

CHECKS = [FeatureCheck("x", True, limit=1e6), FeatureCheck("c", False)]


def test_check_batch_names_each_bad_cell_and_keeps_missing_values():
    batch = pa.table(
        {
            "x": ["1.5", None, "abc", "inf", "2e6", "7"],
            "c": ["a", "b", None, "c", "d", "e" * 1001],
            "row_id": pa.array(range(6), pa.int64()),
        }
    )
    columns, good, problems = check_batch(batch, CHECKS)
    assert good.tolist() == [True, True, False, False, False, False]
    assert np.isnan(columns["x"][1]) and columns["x"][0] == 1.5
    assert pd.isna(columns["c"][2]) and columns["c"][0] == "a"
    assert [(p["index"], p["feature"], p["reason"]) for p in problems] == [
        (2, "x", "expected a number, got str 'abc'"),
        (3, "x", "non-finite number Infinity is not allowed"),
        (4, "x", "number out of range: |value| must be <= 1e+06 for this model"),
        (5, "c", "string longer than 1000 characters"),
    ]


def test_typed_columns_take_the_fast_path_and_numbers_are_no_categories():
    batch = pa.table({"x": pa.array([1, None, 3], pa.int64()), "c": pa.array(["a", "b", None])})
    columns, good, problems = check_batch(batch, CHECKS)
    assert good.all() and not problems
    assert columns["x"].dtype == np.float64 and np.isnan(columns["x"][1])
    assert columns["c"].tolist()[:2] == ["a", "b"] and pd.isna(columns["c"][2])
    # A Parquet column of numbers for a categorical feature: refused, as /predict refuses it.
    numbers = batch.set_column(1, "c", pa.array([1, 2, None]))
    _, good, problems = check_batch(numbers, CHECKS)
    assert good.tolist() == [False, False, True]
    assert [p["reason"] for p in problems] == [
        "expected a string category, got int 1",
        "expected a string category, got int 2",
    ]


class FailsOnNegative:
    """A model that cannot score some rows (e.g. a runtime error on one input)."""

    feature_names = ["x", "c"]

    def predict_proba(self, columns):
        if (columns["x"] < 0).any():
            raise ValueError("cannot score a negative x")
        return np.column_stack([1 - columns["x"] / 10, columns["x"] / 10])


def test_a_model_error_rejects_only_the_rows_that_cause_it(tmp_path):
    scorer = BatchScorer.__new__(BatchScorer)
    meta = make_metadata(version="v1", classes=["n", "y"])
    scorer.model = LoadedModel(FailsOnNegative(), meta, "onnx")
    scorer.checks, scorer.classes, scorer.explainer = CHECKS, ["n", "y"], None
    scorer.rejects_fs, scorer.rejects_dir = pa.fs.LocalFileSystem(), str(tmp_path)
    x = [1.0, -1.0, 2.0, 3.0, -5.0, 9.0, 4.0]
    batch = pa.table({"x": x, "c": ["a"] * 7, "row_id": pa.array(range(10, 17), pa.int64())})
    out = scorer(batch)
    assert out.column("row_id").to_pylist() == [10, 12, 13, 15, 16]
    assert out.column("prediction").to_pylist() == ["n", "n", "n", "y", "n"]
    assert out.column("proba_y").to_pylist() == pytest.approx([0.1, 0.2, 0.3, 0.9, 0.4])
    rejects = pd.read_parquet(tmp_path)
    assert rejects.row_id.tolist() == [11, 14]
    assert set(rejects.reason) == {"model error: cannot score a negative x"}


def test_row_source_checks_columns_and_lists_data_files(tmp_path):
    (tmp_path / "d").mkdir()
    pd.DataFrame({"x": [1.0], "c": ["a"], "id": [1]}).to_csv(tmp_path / "d/a.csv", index=False)
    pd.DataFrame({"x": [2.0], "c": ["b"]}).to_parquet(tmp_path / "d/b.parquet")
    (tmp_path / "d/_SUCCESS").write_text("")
    (tmp_path / "d/.hidden.csv").write_text("x\n1\n")
    source = RowSource(str(tmp_path / "d"), CHECKS)
    assert [f.name for f in source.files] == ["a.csv", "b.parquet"] and source.multi_file
    assert source.extra_columns == ["id"]
    with pytest.raises(InputError, match=r"a.csv: missing feature columns \['z'\]"):
        RowSource(str(tmp_path / "d/a.csv"), [CHECKS[0], FeatureCheck("z", False)])
    with pytest.raises(InputError, match="input not found"):
        RowSource(str(tmp_path / "nothing.csv"), CHECKS)
    pd.DataFrame({"x": [pd.Timestamp(0)], "c": ["a"]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"column 'x' .* cannot hold numeric"):
        RowSource(str(tmp_path / "t.parquet"), CHECKS)


@pytest.mark.parametrize("bad", ["1e999", "abc", "2e6", "NAN"])
def test_csv_numbers_read_as_numbers_until_a_cell_the_rules_refuse(tmp_path, monkeypatch, bad):
    """Clean blocks come typed; from the block holding a refused cell, the rest of the file
    comes as text (read again from the start: blank lines are not rows), every row once."""
    monkeypatch.setattr("sparc_ray.batch.source.CSV_BLOCK_BYTES", 64)  # a few rows a block
    lines = [f"{i}.5,{'ab'[i % 2]}" for i in range(60)]
    lines[5], lines[40] = "", f"{bad},a"  # a blank line before the refused cell
    path = tmp_path / "rows.csv"
    path.write_text("x,c\n" + "\n".join(lines) + "\n")
    source = RowSource(str(path), CHECKS)
    tables = list(source._read(source.files[0]))
    kinds = [t.schema.field("x").type for t in tables]
    assert kinds[0] == pa.float64() and kinds[-1] == pa.string(), kinds
    assert kinds.index(pa.string()) == kinds.count(pa.float64())  # typed, then text only
    whole = pa.concat_tables([t.cast(tables[-1].schema) for t in tables])
    assert whole.column("row_id").to_pylist() == list(range(59))  # the blank line is no row
    expected = [line.split(",")[0] for line in lines if line]
    assert [float(x) for x in whole.column("x").to_pylist() if x != bad] == [
        float(x) for x in expected if x != bad
    ]
    _, good, problems = check_batch(whole, CHECKS)
    assert [(p["index"], p["value"]) for p in problems] == [(39, bad)]  # as written
    assert good.sum() == 58


def test_a_clean_csv_is_read_as_numbers_only(tmp_path, monkeypatch):
    monkeypatch.setattr("sparc_ray.batch.source.CSV_BLOCK_BYTES", 64)
    path = tmp_path / "rows.csv"
    path.write_text("x,c\n" + "\n".join(f"{i},a" for i in range(30)) + "\n,b\n")
    source = RowSource(str(path), CHECKS)
    tables = list(source._read(source.files[0]))
    assert len(tables) > 2 and {t.schema.field("x").type for t in tables} == {pa.float64()}
    x = pa.concat_tables(tables).column("x").to_pylist()
    assert x == [float(i) for i in range(30)] + [None]
