"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package names its public surface once; a name's module is imported on first use, so
``import sparc_ray.registry`` stays light (no scikit-learn, no Ray) until a heavy name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``; ``names`` maps public name -> submodule."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return __getattr__, sorted(names)
