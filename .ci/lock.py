"""Write the lockfiles from pip's own resolver: ``requirements-dev.lock`` (the package and its
dev extra: `make test`, CI) and ``requirements.lock`` (what the package alone needs: the
Docker image, resolved under the dev lock's versions, so the image runs what CI tested), every
distribution pinned with its sha256 (``pip install --require-hashes``).

    .venv/bin/python .ci/lock.py            # after changing dependencies in pyproject.toml
    .venv/bin/python .ci/lock.py --upgrade  # also move existing pins to the newest allowed

Without ``--upgrade`` the versions already in ``requirements-dev.lock`` are constraints: a new
dependency adds its own closure and moves no existing pin (if it needs another version of a
pinned distribution, the resolution fails: re-lock with ``--upgrade``).

The resolution is for this interpreter and platform (CPython 3.11, Linux x86_64), the
Docker base image's.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+==\S+) \\$", re.M)


def current_pins(path: str) -> list[str]:
    """``name==version`` of every distribution in an existing lockfile (none if absent)."""
    lock = ROOT / path
    return PIN.findall(lock.read_text()) if lock.exists() else []


def resolve(spec: str, constraints: Sequence[str] = ()) -> list[str]:
    """``name==version --hash=sha256:...`` for every distribution ``spec`` installs."""
    with tempfile.TemporaryDirectory() as tmp:
        report, pins = Path(tmp) / "report.json", Path(tmp) / "constraints.txt"
        pins.write_text("".join(line.split(" ")[0] + "\n" for line in constraints))
        pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd = [*pip, "--quiet", "--report", str(report), "-c", str(pins), spec]
        subprocess.run(cmd, cwd=ROOT, check=True)
        installs = json.loads(report.read_text())["install"]
    lines = []
    for item in installs:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name == "sparc-ray":
            continue
        sha = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not sha:
            raise SystemExit(f"no sha256 for {name}=={version}: {item['download_info']}")
        lines.append(f"{name.lower()}=={version} \\\n    --hash=sha256:{sha}")
    return sorted(lines)


def write(path: str, spec: str, lines: list[str]) -> None:
    header = f"# {path}: pip install --require-hashes -r {path}  (from .ci/lock.py: {spec})\n"
    (ROOT / path).write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upgrade", action="store_true", help="do not keep the current pins")
    args = parser.parse_args()
    keep = [] if args.upgrade else current_pins("requirements-dev.lock")
    dev = resolve(".[dev]", constraints=keep)
    write("requirements-dev.lock", ".[dev]", dev)
    write("requirements.lock", ".", resolve(".", constraints=dev))


if __name__ == "__main__":
    main()
