"""sparc-ray: train tabular classifiers with Ray Tune, publish signed versions, serve them with
Ray Serve on KubeRay.

Packages by stage: ``data`` → ``training`` → ``registry`` → ``inference`` (shared by)
``serving`` and ``batch``; ``monitoring`` watches what is served. The names below are the
public API; everything else may change between releases.
"""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sparc_ray.client import SparcClient as SparcClient
    from sparc_ray.data import DataValidator as DataValidator
    from sparc_ray.data import load_dataset as load_dataset
    from sparc_ray.inference import RegistryLoader as RegistryLoader
    from sparc_ray.registry import ModelRegistry as ModelRegistry
    from sparc_ray.registry import promote as promote
    from sparc_ray.serving import AppArgs as AppArgs
    from sparc_ray.serving import build_app as build_app
    from sparc_ray.training import SPARCClassificationModel as SPARCClassificationModel

__getattr__, _public = exports(
    __name__,
    {
        "SPARCClassificationModel": "training",
        "DataValidator": "data",
        "load_dataset": "data",
        "ModelRegistry": "registry",
        "promote": "registry",
        "RegistryLoader": "inference",
        "AppArgs": "serving",
        "build_app": "serving",
        "SparcClient": "client",
    },
)
__all__ = [*_public, "__version__"]
