"""Reading what the service captured (``sparc_ray.monitoring.capture``): captured rows, their
labels,
and the labelled rows as a training frame (``jobs/train.py --data capture:STORE/NAME``).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds

from sparc_ray.data.loading import DataError, load_dataset
from sparc_ray.monitoring.capture import LABELS, PARTITIONING, PREDICTIONS, capture_root
from sparc_ray.registry import storage


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``24h`` / ``7d`` / ``30m`` ago, or an ISO date / time (UTC when no zone): epoch s."""
    if not text:
        return None
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    if m := re.fullmatch(r"(\d+)([mhd])", text):
        return now - int(m[1]) * {"m": 60, "h": 3600, "d": 86400}[m[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: use e.g. 24h, 7d or 2026-11-27T08:00") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


# -- reading -----------------------------------------------------------------------------
def _dataset(root: str, kind: str) -> pds.Dataset | None:
    fs, path = storage.open_fs(root)
    directory = posixpath.join(path, kind)
    if fs.get_file_info(directory).type == pa.fs.FileType.NotFound:
        return None
    return pds.dataset(directory, filesystem=fs, format="parquet", partitioning=PARTITIONING)


def read_predictions(
    root: str, since: float | None = None, version: str | None = None
) -> pd.DataFrame:
    """Captured rows (features flattened into columns) since ``since`` (epoch seconds)."""
    ds = _dataset(root, PREDICTIONS)
    if ds is None:
        return pd.DataFrame()
    expr = None
    if since is not None:
        expr = pds.field("timestamp") >= since
    if version is not None:
        clause = pds.field("model_version") == version
        expr = clause if expr is None else expr & clause
    table = ds.to_table(filter=expr)
    features = table.column("features").combine_chunks()
    out = table.drop_columns(["features"]).to_pandas()
    for i, field in enumerate(features.type):
        out[field.name] = features.field(i).to_numpy(zero_copy_only=False)
    return out


def read_labels(root: str) -> pd.DataFrame:
    ds = _dataset(root, LABELS)
    if ds is None:
        return pd.DataFrame(columns=["prediction_id", "row", "label", "timestamp"])
    # One label per predicted row: the latest wins.
    labels = ds.to_table().to_pandas().sort_values("timestamp")
    return labels.drop_duplicates(["prediction_id", "row"], keep="last")


def labelled_rows(root: str, since: float | None = None) -> pd.DataFrame:
    """Captured rows joined with their labels (only labelled rows)."""
    predictions = read_predictions(root, since)
    if predictions.empty:
        return predictions
    labels = read_labels(root)[["prediction_id", "row", "label"]]
    return predictions.merge(labels, on=["prediction_id", "row"], how="inner")


def split_capture_location(location: str) -> tuple[str, str]:
    """``<store>/<name>`` (a path or a URI, query kept with the store) -> (store, name)."""
    url = urlsplit(location)
    path = (url.path if storage.is_uri(location) else location).rstrip("/")
    store_path, name = posixpath.split(path)
    if not name or not store_path:
        raise DataError(f"capture:{location}: expected capture:<model store>/<model name>")
    store = urlunsplit(url._replace(path=store_path)) if storage.is_uri(location) else store_path
    return store, name


def load_capture_dataset(
    location: str, since: float | None = None, with_training_data: bool = False
) -> tuple[pd.DataFrame, str]:
    """The labelled rows captured for ``<store>/<name>`` as a training frame: the production
    version's features, and its target column holding the labels from ``/feedback``
    (optionally with that version's own training data added)."""
    from sparc_ray.registry.store import ModelRegistry, RegistryError

    store, name = split_capture_location(location)
    try:
        registry = ModelRegistry(store)
        meta = registry.metadata(name, registry.resolve(name, "production"))
    except RegistryError as exc:
        raise DataError(f"capture:{location}: {exc}") from exc
    features, target = meta.feature_names, meta.target or "target"
    rows = labelled_rows(capture_root(store, name), since)
    if rows.empty:
        raise DataError(f"capture:{location}: no captured rows with a /feedback label yet")
    labels = rows["label"]
    if all(isinstance(c, int) for c in meta.classes):  # labels arrive as text
        labels = pd.to_numeric(labels, errors="coerce")
    frame = rows[features].assign(**{target: labels.to_numpy()})
    if with_training_data:
        source = meta.training_data and meta.training_data.source
        if not source:
            raise DataError(f"capture:{location}: the production version names no training data")
        original, _ = load_dataset(source)
        frame = pd.concat([original[[*features, target]], frame], ignore_index=True)
    return frame, target
