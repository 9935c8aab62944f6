"""Releases as the Serve app runs them: live evidence per version, the shadow copy, and the
policy that promotes or rolls back a candidate."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.serving.release.monitor import ReleaseMonitor as ReleaseMonitor

__getattr__, __all__ = exports(
    __name__,
    {
        "ReleaseMonitor": "monitor",
    },
)
