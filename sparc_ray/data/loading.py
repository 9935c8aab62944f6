"""Dataset loading (CSV / Parquet / bundled), feature-schema inference and splitting."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from sparc_ray.registry import storage

logger = logging.getLogger(__name__)
BUILTIN_PREFIX = "builtin:"
MAX_CATEGORIES = 1000  # categories kept in the schema per categorical feature


class DataError(ValueError):
    """The dataset cannot be used; the message says why and names the column."""


def _builtin(name: str) -> tuple[pd.DataFrame, str]:
    from sklearn import datasets

    loaders = {
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
    }
    if name not in loaders:
        raise DataError(f"unknown bundled dataset {name!r}; choose one of {sorted(loaders)}")
    bunch = loaders[name](as_frame=True)
    df = bunch.frame.copy()
    # String labels make responses readable ("malignant" rather than 0).
    df["target"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
    return df, "target"


def load_dataset(uri: str) -> tuple[pd.DataFrame, str | None]:
    """Load ``builtin:NAME``, or a CSV / Parquet file at a local path or pyarrow URI.

    Returns the frame and the default target column (only bundled datasets have one).
    """
    if uri.startswith(BUILTIN_PREFIX):
        return _builtin(uri[len(BUILTIN_PREFIX) :])
    import pyarrow.csv as pacsv
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    try:
        fs, path = storage.open_fs(uri)
        info = fs.get_file_info(path)
    except Exception as exc:  # unknown scheme, bad bucket, no credentials...
        raise DataError(f"cannot open {uri!r}: {exc}") from exc
    if info.type != pafs.FileType.File:
        raise DataError(f"data file not found: {uri}")
    try:
        if path.endswith((".parquet", ".pq")):
            table = pq.read_table(path, filesystem=fs)
        else:
            with fs.open_input_stream(path) as stream:
                # Empty CSV cells are missing values, also in string columns.
                convert = pacsv.ConvertOptions(strings_can_be_null=True)
                table = pacsv.read_csv(stream, convert_options=convert)
    except Exception as exc:
        raise DataError(f"cannot parse {uri}: {exc}") from exc
    return table.to_pandas(), None


@dataclass
class FeatureSpec:
    """What training saw of one feature; stored in metadata.json and used to validate requests."""

    name: str
    kind: str  # "numeric" | "categorical"
    dtype: str
    missing_rate: float
    min: float | None = None
    max: float | None = None
    categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_numeric(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series) or ptypes.is_bool_dtype(series)


def infer_schema(X: pd.DataFrame) -> list[FeatureSpec]:
    """Infer per-feature kind, dtype, range / categories and missing rate."""
    specs = []
    for name in X.columns:
        col = X[name]
        missing = float(col.isna().mean()) if len(col) else 0.0
        if is_numeric(col):
            values = col.dropna().astype(float)
            specs.append(
                FeatureSpec(
                    name=str(name),
                    kind="numeric",
                    dtype=str(col.dtype),
                    missing_rate=missing,
                    min=float(values.min()) if len(values) else None,
                    max=float(values.max()) if len(values) else None,
                )
            )
        else:
            cats = sorted(col.dropna().astype(str).unique().tolist())[:MAX_CATEGORIES]
            specs.append(
                FeatureSpec(
                    name=str(name),
                    kind="categorical",
                    dtype=str(col.dtype),
                    missing_rate=missing,
                    categories=cats,
                )
            )
    return specs


def split_features(specs: list[FeatureSpec]) -> tuple[list[str], list[str]]:
    numeric = [s.name for s in specs if s.kind == "numeric"]
    categorical = [s.name for s in specs if s.kind == "categorical"]
    return numeric, categorical


def normalize_features(X: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as Python-object strings (NaN kept), numeric as float64.

    Applied to training data and to request batches so the pipeline sees one representation.
    Columns already in that form are left alone (no copy: the serving hot path).
    """
    converted = {}
    for name in X.columns:
        col = X[name]
        if is_numeric(col):
            if col.dtype != np.float64:
                converted[name] = col.astype("float64")
        else:
            values = col.to_numpy(dtype=object, na_value=np.nan)
            converted[name] = pd.Series(
                [v if isinstance(v, str) or pd.isna(v) else str(v) for v in values],
                index=X.index,
                dtype=object,
            )
    return X.assign(**converted) if converted else X


def columns_from_frame(
    df: pd.DataFrame, feature_names: Sequence[str], feature_kinds: Sequence[str]
) -> dict[str, np.ndarray]:
    """A frame as a scorer takes it (``inference.columns``): numeric float64 (NaN =
    missing), categorical object str / NaN."""
    X = normalize_features(df[list(feature_names)])
    return {
        n: X[n].to_numpy(dtype=np.float64 if k == "numeric" else object, na_value=np.nan)
        for n, k in zip(feature_names, feature_kinds, strict=True)
    }


def fingerprint(df: pd.DataFrame) -> str:
    """Content hash of a frame (values, columns, dtypes), stable across runs."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(",".join(map(str, df.dtypes)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def data_version(uri: str) -> dict[str, str] | None:
    """Which version of the data file this is, when something versions it: the md5 that DVC
    recorded in ``<file>.dvc`` beside it, or the object version of an ``s3://`` object in a
    bucket with versioning on. None otherwise (the fingerprint still identifies the data)."""
    if uri.startswith(BUILTIN_PREFIX):
        return None
    if not storage.is_uri(uri) or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        dvc = f"{path}.dvc"
        if os.path.isfile(dvc):
            import yaml

            with open(dvc) as fh:
                outs = (yaml.safe_load(fh) or {}).get("outs") or [{}]
            found = outs[0].get("md5") or outs[0].get("etag")
            return (
                {"kind": "dvc", "md5": str(found), "file": os.path.basename(dvc)} if found else None
            )
        return None
    if uri.startswith("s3://"):
        return _s3_version(uri)
    return None


def _s3_version(uri: str) -> dict[str, str] | None:
    """The version of an ``s3://`` object; None only when S3 says the object has no version
    (a bucket without versioning) or boto3 is not installed (logged). Any failure to ask
    (credentials, permission, no such bucket or object, network) is a DataError naming it:
    an unknown version is never recorded as "unversioned"."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        logger.warning("%s: object version not recorded: boto3 is not installed", uri)
        return None
    url = urlsplit(uri)
    options = dict(parse_qsl(url.query))
    endpoint = options.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme', 'https')}://{endpoint}"
    bucket, key = url.netloc.rpartition("@")[2], url.path.lstrip("/")  # no user:secret@
    try:
        client = boto3.session.Session().client(  # credentials as the environment has them now
            "s3",
            endpoint_url=endpoint,
            region_name=options.get("region"),
            aws_access_key_id=unquote(url.username) if url.username else None,
            aws_secret_access_key=unquote(url.password) if url.password else None,
        )
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise DataError(
            f"cannot read the object version of {uri}: S3 answered {status} "
            f"{error.get('Code', '')} {error.get('Message', '')}".rstrip()
            + " (check the bucket, the key, the credentials and s3:GetObject permission)"
        ) from exc
    except BotoCoreError as exc:  # no credentials, unreachable endpoint, ...
        raise DataError(f"cannot read the object version of {uri}: {exc}") from exc
    version = head.get("VersionId")
    if not version or version == "null":
        return None
    return {"kind": "s3", "version_id": version, "etag": str(head.get("ETag", "")).strip('"')}
