"""Ray job entrypoint: tune, evaluate, publish and promote a classifier.

    ray job submit --working-dir . -- python jobs/train.py --config tune/default.yaml

Connects to the cluster the job was submitted to, or starts a local Ray when run directly.
Exit codes: 0 promoted (or stored with --no-promote), 2 bad config or data, 3 gates failed,
130 interrupted (continue with --resume).
"""

import sys
from pathlib import Path

# `ray job submit --working-dir .` runs this file from the uploaded copy of the repo: make the
# package importable there even where it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparc_ray.training.job import main

if __name__ == "__main__":
    sys.exit(main())
