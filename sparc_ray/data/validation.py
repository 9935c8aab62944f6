"""Data validation for training sets and scoring batches (the seed's ``DataValidator`` API)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from sparc_ray.data.loading import FeatureSpec, is_numeric
from sparc_ray.inference.input_rules import FLOAT32_MAX, FeatureCheck, check_column

MAX_ERRORS = 20  # problems listed for a scoring batch (the first ones, as /predict does)


class DataValidator:
    """Check a DataFrame and report every problem as one message naming the column.

    * With ``target`` set, the frame is a training set: it must have the target, at least two
      classes, enough rows per class for ``n_folds``-fold CV plus a ``test_size`` holdout, no
      empty column and no infinite values.
    * With ``features`` (the schema saved with a model, and its ``input_limits``), the frame
      is a scoring batch, checked by the same rules as an HTTP request and a batch-scoring job
      (``sparc_ray.inference.input_rules``), naming row and feature.
    """

    def __init__(
        self,
        target: str | None = None,
        n_folds: int = 5,
        test_size: float = 0.2,
        features: list[FeatureSpec] | None = None,
        input_limits: dict[str, float] | None = None,
    ) -> None:
        self.target = target
        self.n_folds = n_folds
        self.test_size = test_size
        self.features = features
        self.input_limits = input_limits or {}

    def validate_dataframe(self, df: pd.DataFrame) -> dict[str, Any]:
        errors: list[str] = []
        if df is None or len(df) == 0:
            errors.append("dataset is empty: no rows")
        elif self.features is not None:  # a scoring batch: the serving rules, row by row
            return {"is_valid": not (errors := self._check_schema(df)), "errors": errors}
        if len(df.columns) == 0:
            errors.append("dataset has no columns")
        if self.target is not None and len(df):
            errors += self._check_target(df)
        if len(df):
            errors += self._check_columns(df)
        return {"is_valid": not errors, "errors": errors}

    def min_rows_per_class(self) -> int:
        """Rows a class needs so that the training split still has ``n_folds`` of them."""
        return math.ceil(self.n_folds / (1.0 - self.test_size)) + 1

    def _check_target(self, df: pd.DataFrame) -> list[str]:
        t = self.target
        if t not in df.columns:
            return [f"target column {t!r} not found; columns are {list(map(str, df.columns))}"]
        errors = []
        y = df[t]
        n_missing = int(y.isna().sum())
        if n_missing:
            errors.append(f"target column {t!r} has {n_missing} missing values")
        counts = y.dropna().astype(str).value_counts()
        if len(counts) < 2:
            errors.append(f"target column {t!r} has {len(counts)} class(es); at least 2 needed")
        need = self.min_rows_per_class()
        for label, n in counts.items():
            if n < need:
                errors.append(
                    f"target column {t!r}: class {label!r} has {n} rows; {need} are needed "
                    f"for {self.n_folds}-fold CV with a {self.test_size:.0%} holdout"
                )
        if len(df.columns) < 2:
            errors.append("dataset has no feature columns besides the target")
        return errors

    def _check_columns(self, df: pd.DataFrame) -> list[str]:
        errors = []
        for name in df.columns:
            if name == self.target:
                continue
            col = df[name]
            if col.isna().all():
                errors.append(f"column {name!r} is entirely empty")
                continue
            if ptypes.is_datetime64_any_dtype(col) or ptypes.is_timedelta64_dtype(col):
                errors.append(f"column {name!r} has unsupported dtype {col.dtype}")
            elif is_numeric(col) and not ptypes.is_bool_dtype(col):
                n_inf = int(np.isinf(col.to_numpy(dtype=float, na_value=np.nan)).sum())
                if n_inf:
                    errors.append(f"column {name!r} has {n_inf} infinite values")
        return errors

    def _check_schema(self, df: pd.DataFrame) -> list[str]:
        """The serving rules (``sparc_ray.inference.input_rules``), column by column."""
        checks = [
            FeatureCheck(f.name, f.kind == "numeric", self.input_limits.get(f.name, FLOAT32_MAX))
            for f in self.features or []
        ]
        expected = {c.name for c in checks}
        given = set(df.columns) - ({self.target} if self.target is not None else set())
        errors = [f"feature {n!r} row 0: missing feature" for n in sorted(expected - given)]
        errors += [f"feature {n!r} row 0: unknown feature" for n in sorted(given - expected)]
        for check in checks:
            if errors[MAX_ERRORS - 1 :] or check.name not in given:
                continue
            reasons = check_column(_values(df[check.name]), check).reasons
            errors += [f"feature {check.name!r} row {i}: {r}" for i, r in sorted(reasons.items())]
        return errors[:MAX_ERRORS]


def _values(column: pd.Series) -> np.ndarray:
    """A column as the input rules take it: NumPy numbers as they are (NaN = missing), any
    other dtype as Python values with None for missing (pandas' NA, NaT, NaN)."""
    if column.dtype.kind in "fiu":
        return column.to_numpy()
    return column.astype(object).where(column.notna(), None).to_numpy()
