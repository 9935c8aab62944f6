"""Reading what the service captured (``sparc_ray.monitoring.capture``): captured rows, their
labels, and the labelled rows as a training frame (``jobs/train.py --data capture:STORE/NAME``).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs

from sparc_ray.data.loading import DataError, load_dataset
from sparc_ray.registry import storage
from sparc_ray.registry.layout import (
    ALIAS,
    CAPTURE_DATE_KEY,
    CAPTURE_LABELS,
    CAPTURE_PREDICTIONS,
    CAPTURE_VERSION_KEY,
    capture_root,
)

if TYPE_CHECKING:
    from sparc_ray.registry.metadata import ModelMetadata

logger = logging.getLogger(__name__)
# Partition values are text: a version id of digits stays a string, not an integer.
PARTITIONING = pds.partitioning(
    pa.schema([(CAPTURE_DATE_KEY, pa.string()), (CAPTURE_VERSION_KEY, pa.string())]), flavor="hive"
)
SHOWN = 5  # unknown labels named in an error


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``24h`` / ``7d`` / ``30m`` ago, or an ISO date / time (UTC when no zone): epoch s."""
    if not text:
        return None
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    if m := re.fullmatch(r"(\d+)([mhd])", text):
        return now - int(m[1]) * {"m": 60, "h": 3600, "d": 86400}[m[2]]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: use e.g. 24h, 7d or 2026-11-27T08:00") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


# -- reading -----------------------------------------------------------------------------
def _dataset(root: str, kind: str) -> pds.Dataset | None:
    """The ``kind`` files under ``root`` (None if there are none), their schemas unified:
    every file is inspected, so a feature that only later versions capture is kept."""
    fs, path = storage.open_fs(root)
    directory = posixpath.join(path, kind)
    if fs.get_file_info(directory).type == pafs.FileType.NotFound:
        return None
    options = pds.FileSystemFactoryOptions(
        partition_base_dir=directory,
        partitioning=PARTITIONING,
        selector_ignore_prefixes=[".", "_"],  # files being written
    )
    selector = pafs.FileSelector(directory, recursive=True)
    factory = pds.FileSystemDatasetFactory(fs, selector, pds.ParquetFileFormat(), options)
    try:
        dataset = factory.finish(factory.inspect(fragments=None))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"captured files under {directory} do not agree: {exc}") from exc
    return dataset if dataset.files else None  # a directory whose writes all failed


def read_predictions(
    root: str, since: float | None = None, version: str | None = None
) -> pd.DataFrame:
    """Captured rows (features flattened into columns) since ``since`` (epoch seconds)."""
    ds = _dataset(root, CAPTURE_PREDICTIONS)
    if ds is None:
        return pd.DataFrame()
    expr = None
    if since is not None:
        expr = pds.field("timestamp") >= since
    if version is not None:
        clause = pds.field(CAPTURE_VERSION_KEY) == version
        expr = clause if expr is None else expr & clause
    table = ds.to_table(filter=expr)
    features = table.column("features").combine_chunks()
    out = table.drop_columns(["features"]).to_pandas()
    for i, field in enumerate(features.type):
        out[field.name] = features.field(i).to_numpy(zero_copy_only=False)
    return out


def read_labels(root: str) -> pd.DataFrame:
    """The ``/feedback`` labels, one per predicted row: the first wins (as ``/feedback``
    decides: a later label for the row is a conflict, not a correction)."""
    ds = _dataset(root, CAPTURE_LABELS)
    if ds is None:
        return pd.DataFrame(columns=["prediction_id", "row", "label", "timestamp"])
    labels = ds.to_table().to_pandas().sort_values("timestamp", kind="stable")
    return labels.drop_duplicates(["prediction_id", "row"], keep="first")


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


def version_metadata(
    store: str, name: str, ref: str = ALIAS, public_key: bytes | None = None
) -> ModelMetadata:
    """metadata.json of ``name``'s ``ref`` version; with ``public_key`` (raw Ed25519) read
    through the signature check (``RegistryLoader.load_metadata``), else unverified (logged).
    Raises RegistryError or IntegrityError."""
    from sparc_ray.inference.loader import RegistryLoader

    loader = RegistryLoader(store, name, public_key)
    version = loader.registry.resolve(name, ref)
    if public_key is None:
        logger.warning(
            "%s/%s: metadata read without a signature check (no public key)", name, version
        )
    return loader.load_metadata(version)


def _as_classes(labels: pd.Series, classes: Sequence[Any], where: str) -> pd.Series:
    """Label text as the production version's class values, matched by their text as
    ``/feedback`` scores them; a label that is no class is a DataError naming it."""
    by_text = {str(c): c for c in classes}
    unknown = labels[~labels.isin(list(by_text))]
    if len(unknown):
        shown = ", ".join(f"{k!r} ({n})" for k, n in unknown.value_counts().head(SHOWN).items())
        raise DataError(
            f"{where}: {len(unknown)} labelled rows have a label that is not a class of the "
            f"production version {list(by_text)}: {shown}; post the right label to /feedback "
            f"again (the latest label wins) or narrow --since"
        )
    return labels.map(by_text)


def load_capture_dataset(
    location: str,
    since: float | None = None,
    with_training_data: bool = False,
    public_key: bytes | None = None,
) -> tuple[pd.DataFrame, str]:
    """The labelled rows captured for ``<store>/<name>`` as a training frame and its target
    column: exactly the production version's features and its target (whatever its name),
    holding the ``/feedback`` labels as that version's class values; optionally with that
    version's own training data added. Production's metadata is read as ``version_metadata``
    reads it (verified with ``public_key``). The target returned is the one to train on: it
    comes from production, never from a config."""
    from sparc_ray.registry.artifacts import IntegrityError
    from sparc_ray.registry.store import RegistryError
    from sparc_ray.training.config import CAPTURE_PREFIX

    where = f"{CAPTURE_PREFIX}{location}"
    store, name = split_capture_location(location)
    try:
        meta = version_metadata(store, name, public_key=public_key)
    except (RegistryError, IntegrityError) as exc:
        raise DataError(f"{where}: {exc}") from exc
    if not meta.target:
        raise DataError(f"{where}: production version {meta.version} names no target column")
    features, target = meta.feature_names, meta.target
    rows = labelled_rows(capture_root(store, name), since)
    if rows.empty:
        raise DataError(f"{where}: no captured rows with a /feedback label yet")
    missing = [f for f in features if f not in rows.columns]
    if missing:
        raise DataError(f"{where}: the captured rows lack production's features {missing}")
    labels = _as_classes(rows["label"], meta.classes, where)
    frame = rows[features].assign(**{target: labels.to_numpy()})
    if with_training_data:
        source = meta.training_data and meta.training_data.source
        if not source:
            raise DataError(f"{where}: the production version names no training data")
        if source.startswith(CAPTURE_PREFIX):
            raise DataError(
                f"{where}: production was itself trained on captured rows ({source}); "
                f"--with-training-data needs a version trained on a dataset"
            )
        original, _ = load_dataset(source)
        absent = [c for c in [*features, target] if c not in original.columns]
        if absent:
            raise DataError(f"{where}: production's training data {source} lacks {absent}")
        frame = pd.concat([original[[*features, target]], frame], ignore_index=True)
    return frame, target
