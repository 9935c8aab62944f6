"""Monitoring: drift references and PSI, traffic capture (sampled, bounded, asynchronous Parquet
of scored rows and feedback labels) and the offline drift report."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.monitoring.capture import CaptureWriter as CaptureWriter
    from sparc_ray.monitoring.drift import DriftMonitor as DriftMonitor
    from sparc_ray.monitoring.drift import build_reference as build_reference
    from sparc_ray.monitoring.drift_report import write_report as write_report

__getattr__, __all__ = exports(
    __name__,
    {
        "DriftMonitor": "drift",
        "build_reference": "drift",
        "CaptureWriter": "capture",
        "write_report": "drift_report",
    },
)
