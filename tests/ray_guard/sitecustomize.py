"""Ray refuses to start in a test that is not marked `cluster`.

For each such test, tests/conftest.py sets SPARC_TEST_WITHOUT_RAY (to the test's id) and puts
this directory on PYTHONPATH, so every Python process the test starts loads this module at
startup; the conftest calls install() in the pytest process itself. While the variable is
set, ``ray.init`` raises and ``ray start`` exits, both saying which test to mark. Importing
Ray stays allowed (and this module does not import it)."""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import sys

ENV = "SPARC_TEST_WITHOUT_RAY"


class RayInUnmarkedTest(RuntimeError):
    pass


def message() -> str:
    return f"this test starts Ray: mark it `cluster` ({os.environ.get(ENV)})"


def _guarded(init):
    @functools.wraps(init)
    def init_in_cluster_tests_only(*args, **kwargs):
        if os.environ.get(ENV):
            raise RayInUnmarkedTest(message())
        return init(*args, **kwargs)

    init_in_cluster_tests_only.ray_guard = True
    return init_in_cluster_tests_only


def _guard(ray) -> None:
    if not getattr(ray.init, "ray_guard", False):
        ray.init = _guarded(ray.init)  # Tune, Serve and Ray Data's auto-init call ray.init too


class _GuardRayWhenImported(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "ray":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("ray")
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_guard(module) -> None:
                exec_module(module)
                _guard(module)

            spec.loader.exec_module = exec_then_guard
        return spec


def install() -> None:
    """Guard ``ray.init`` in this process: now if Ray is imported, else when it is."""
    if "ray" in sys.modules:
        _guard(sys.modules["ray"])
    elif not any(isinstance(f, _GuardRayWhenImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _GuardRayWhenImported())


if os.environ.get(ENV):
    argv = getattr(sys, "argv", None) or [""]
    if os.path.basename(argv[0]) == "ray" and argv[1:2] == ["start"]:
        sys.stderr.write(f"{message()}\n")
        sys.stderr.flush()
        os._exit(3)
    install()
