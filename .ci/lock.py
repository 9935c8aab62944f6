"""Write the lockfiles from pip's own resolver: ``requirements.lock`` (what the package needs:
the Docker image) and ``requirements-dev.lock`` (plus the dev extra: `make test`, CI), every
distribution pinned with its sha256 (``pip install --require-hashes``).

    .venv/bin/python .ci/lock.py        # after changing dependencies in pyproject.toml

The resolution is for this interpreter and platform (CPython 3.11, Linux x86_64), the
Docker base image's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"requirements.lock": ".", "requirements-dev.lock": ".[dev]"}


def resolve(spec: str) -> list[str]:
    """``name==version --hash=sha256:...`` for every distribution ``spec`` installs."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        subprocess.run([*pip, "--quiet", "--report", str(report), spec], cwd=ROOT, check=True)
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


def main() -> None:
    for path, spec in LOCKS.items():
        header = f"# {path}: pip install --require-hashes -r {path}  (from .ci/lock.py: {spec})\n"
        (ROOT / path).write_text(header + "\n".join(resolve(spec)) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
