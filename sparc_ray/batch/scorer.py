"""What a scoring actor does with one Arrow batch: check each cell with the shared input
rules (``sparc_ray.inference.input_rules``, as ``/predict`` does), score the good rows with the
version loaded as a Serve replica loads it (rows the model fails on are isolated by
``inference.isolation``), and write one reject record per bad cell or failed row. With
``explain``, each scored row also gets its feature contributions (``inference.explain``, from
the signed version only): ``explained_class``, ``base_value`` and ``contribution_<feature>``.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sparc_ray.batch.source import ROW_ID, SOURCE
from sparc_ray.inference.columns import Columns, take
from sparc_ray.inference.explain import Explainer, load_explainer
from sparc_ray.inference.input_rules import FeatureCheck, check_column, checks_from_metadata
from sparc_ray.inference.isolation import score_isolating
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.inference.loader import RegistryLoader
from sparc_ray.registry import storage


def check_batch(
    batch: pa.Table, checks: list[FeatureCheck]
) -> tuple[Columns, np.ndarray, list[dict[str, Any]]]:
    """The model's input columns, the mask of good rows, and one record per bad value:
    ``{"index": i, "feature": name, "value": text, "reason": why}``."""
    columns: Columns = {}
    good = np.ones(batch.num_rows, bool)
    problems: list[dict[str, Any]] = []
    for check in checks:
        col = batch.column(check.name)
        checked = check_column(col, check)
        columns[check.name] = checked.values
        for i, reason in sorted(checked.reasons.items()):
            raw = col[i].as_py()
            problems.append(
                {"index": i, "feature": check.name, "value": str(raw)[:200], "reason": reason}
            )
        good &= ~checked.bad
    return columns, good, problems


class BatchScorer:
    """A Ray Data actor: checks rows, scores the good ones, writes the bad ones to rejects."""

    def __init__(
        self,
        store: str,
        name: str,
        version: str,
        public_key: bytes | None,
        rejects: str,
        explain: bool = False,
    ) -> None:
        loader = RegistryLoader(store, name, public_key)
        self.model = loader.load(version)
        self.explainer: Explainer | None = None
        if explain:
            if public_key is None:
                raise ValueError("explanations need a signed version (a public key)")
            self.explainer = load_explainer(loader.registry, name, version, public_key)
        self.checks = checks_from_metadata(self.model.metadata)
        self.classes = list(self.model.metadata.classes)
        self.rejects_fs, self.rejects_dir = storage.open_fs(rejects)

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns, good, problems = check_batch(batch, self.checks)
        rows = np.flatnonzero(good)
        scored = score_isolating(
            self.model.scorer.predict_proba, take(columns, rows), len(self.classes)
        )
        failed = rows[list(scored.failed)]
        good[failed] = False
        problems += [
            {"index": int(rows[k]), "feature": None, "value": None, "reason": f"model error: {e}"}
            for k, e in scored.failed.items()
        ]
        proba = np.delete(scored.proba, list(scored.failed), axis=0)
        rows = np.delete(rows, list(scored.failed))
        if problems:
            self._write_rejects(batch, problems)
        keep = pa.array(np.flatnonzero(good))
        out = {ROW_ID: batch.column(ROW_ID).take(keep)}
        if SOURCE in batch.column_names:
            out[SOURCE] = batch.column(SOURCE).take(keep)
        out["prediction"] = pa.array(labels_from_proba(proba, self.classes).tolist())
        for k, label in enumerate(self.classes):
            out[f"proba_{label}"] = pa.array(proba[:, k])
        out["model_version"] = pa.array([self.model.version] * len(proba), pa.string())
        if self.explainer is not None:
            out |= explanation_columns(self.explainer, take(columns, rows))
        return pa.table(out)

    def _write_rejects(self, batch: pa.Table, problems: list[dict[str, Any]]) -> None:
        index = pa.array([p["index"] for p in problems], pa.int64())
        table = {ROW_ID: batch.column(ROW_ID).take(index)}
        if SOURCE in batch.column_names:
            table[SOURCE] = batch.column(SOURCE).take(index)
        for key in ("feature", "value", "reason"):
            table[key] = pa.array([p[key] for p in problems], pa.string())
        # Named by the batch's first row: a batch scored again (its actor or node was lost)
        # rewrites its own file instead of adding a copy, so each row is rejected once.
        origin = ""
        if SOURCE in batch.column_names:
            source = str(batch.column(SOURCE)[0].as_py()).encode()
            origin = hashlib.sha256(source).hexdigest()[:12] + "-"
        name = f"part-{origin}{batch.column(ROW_ID)[0].as_py():012d}.parquet"
        pq.write_table(
            pa.table(table), posixpath.join(self.rejects_dir, name), filesystem=self.rejects_fs
        )


def explanation_columns(explainer: Explainer, columns: Columns) -> dict[str, pa.Array]:
    """``explained_class``, ``base_value`` and ``contribution_<feature>`` of scored rows."""
    explained = explainer.explain(pd.DataFrame(columns, copy=False))
    out = {
        "explained_class": pa.array([str(c) for c in explained.explained_classes], pa.string()),
        "base_value": pa.array(explained.base_values),
    }
    for j, feature in enumerate(explained.feature_names):
        out[f"contribution_{feature}"] = pa.array(explained.contributions[:, j])
    return out
