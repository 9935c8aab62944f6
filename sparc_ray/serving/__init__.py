"""Serving: the Ray Serve application ``Validator -> Model -> Postprocessor`` (and the Explainer;
``build_app``), its typed settings, the HTTP API (ingress, responses, OpenAPI, admin endpoints,
the Open Inference Protocol V2), dispatch of a micro-batch over versions, routing of releases,
metrics and Serve's fast path; ``serving.release`` watches and decides releases in progress."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.serving.app import AppArgs as AppArgs
    from sparc_ray.serving.app import build_app as build_app

__getattr__, __all__ = exports(__name__, {"AppArgs": "app", "build_app": "app"})
