"""The lockfiles: every distribution pinned with its sha256, and in step with pyproject.toml
(run `.ci/lock.py` after changing a dependency)."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def _lock(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    body = "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))
    entries = ENTRY.findall(body)
    assert ENTRY.sub("", body).strip() == "", f"{name}: a line that is not name==version + hash"
    pins = {canonicalize_name(n): v for n, v, _ in entries}
    assert len(pins) == len(entries), f"{name}: a distribution pinned twice"
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize(
    ("lock", "groups"),
    [("requirements.lock", ["runtime"]), ("requirements-dev.lock", ["runtime", "dev"])],
)
def test_every_declared_dependency_is_locked_at_an_allowed_version(lock, groups):
    pins, project = _lock(lock), _project()
    declared = {
        "runtime": project["dependencies"],
        "dev": project["optional-dependencies"]["dev"],
    }
    for group in groups:
        for spec in declared[group]:
            req = Requirement(spec)
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock}: {req.name} is not locked"
            assert req.specifier.contains(pins[name], prereleases=True), (lock, spec, pins[name])


def test_the_runtime_lock_is_the_dev_lock_minus_dev_tools():
    runtime, dev = _lock("requirements.lock"), _lock("requirements-dev.lock")
    assert {n: dev.get(n) for n in runtime} == runtime


def test_make_installs_from_the_lock_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements-dev.lock" in makefile
    assert "pip install -q --no-deps -e '.[dev]'" in makefile
