"""Data: loading datasets (CSV, Parquet, bundled; local or any pyarrow URI), inferring the
feature schema, validating a training set, and reading what the service captured back as
training rows."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.data.captured import load_capture_dataset as load_capture_dataset
    from sparc_ray.data.loading import DataError as DataError
    from sparc_ray.data.loading import FeatureSpec as FeatureSpec
    from sparc_ray.data.loading import data_version as data_version
    from sparc_ray.data.loading import infer_schema as infer_schema
    from sparc_ray.data.loading import load_dataset as load_dataset
    from sparc_ray.data.validation import DataValidator as DataValidator

__getattr__, __all__ = exports(
    __name__,
    {
        "load_dataset": "loading",
        "DataError": "loading",
        "FeatureSpec": "loading",
        "infer_schema": "loading",
        "data_version": "loading",
        "DataValidator": "validation",
        "load_capture_dataset": "captured",
    },
)
