"""Dataset loading and schema inference on real files."""

import numpy as np
import pandas as pd
import pytest

from sparc_ray.data.loading import (
    DataError,
    fingerprint,
    infer_schema,
    load_dataset,
    normalize_features,
)


def test_builtin_breast_cancer_has_string_labels():
    df, target = load_dataset("builtin:breast_cancer")
    assert target == "target"
    assert df.shape == (569, 31)
    assert set(df[target]) == {"malignant", "benign"}


def test_unknown_builtin_is_a_clear_error():
    with pytest.raises(DataError, match="unknown bundled dataset 'nope'"):
        load_dataset("builtin:nope")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "file-uri"])
def test_csv_parquet_and_uri_load_the_same_frame(tmp_path, loans, fmt):
    path = tmp_path / ("loans.parquet" if fmt == "parquet" else "loans.csv")
    if fmt == "parquet":
        loans.to_parquet(path)
    else:
        loans.to_csv(path, index=False)
    uri = f"file://{path}" if fmt == "file-uri" else str(path)
    df, target = load_dataset(uri)
    assert target is None
    pd.testing.assert_frame_equal(
        normalize_features(df), normalize_features(loans), check_dtype=False
    )


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "absent.csv"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot parse"):
        load_dataset(str(bad))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="cannot parse"):
        load_dataset(str(ragged))


def test_schema_kinds_ranges_categories_and_missing_rate(loans):
    specs = {s.name: s for s in infer_schema(loans.drop(columns="decision"))}
    assert specs["income"].kind == "numeric" and specs["income"].min > 0
    assert specs["age"].missing_rate == pytest.approx(30 / 600)
    emp = specs["employment"]
    assert emp.kind == "categorical"
    assert emp.categories == ["retired", "salaried", "self-employed", "unemployed"]
    assert emp.missing_rate == pytest.approx(20 / 600)


def test_normalize_keeps_missing_and_stringifies_categories():
    df = pd.DataFrame({"n": [1, None, 3], "c": ["a", None, 5]})
    out = normalize_features(df)
    assert out["n"].dtype == np.float64 and np.isnan(out["n"][1])
    assert out["c"].tolist()[0] == "a" and out["c"].tolist()[2] == "5"
    assert pd.isna(out["c"][1])


def test_fingerprint_changes_with_content(loans):
    assert fingerprint(loans) == fingerprint(loans.copy())
    changed = loans.copy()
    changed.loc[0, "income"] += 1
    assert fingerprint(changed) != fingerprint(loans)


def test_data_version_from_a_dvc_file_beside_the_data(tmp_path):
    from sparc_ray.data.loading import data_version

    (tmp_path / "d.csv").write_text("a\n1\n")
    assert data_version(str(tmp_path / "d.csv")) is None
    assert data_version("builtin:iris") is None
    (tmp_path / "d.csv.dvc").write_text("outs:\n- md5: abc123\n  size: 4\n  path: d.csv\n")
    expected = {"kind": "dvc", "md5": "abc123", "file": "d.csv.dvc"}
    assert data_version(str(tmp_path / "d.csv")) == expected
