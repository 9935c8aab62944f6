"""Ray job entrypoint: score a dataset with a registry version, streaming with Ray Data.

    ray job submit --working-dir . -- python jobs/score.py --data rows.csv --name loans \
        --store model_store --out scores/

Connects to the cluster the job was submitted to, or starts a local Ray when run directly.
Exit codes: 0 scored (rejected rows are listed in OUT/rejects), 2 bad input, model or key.
"""

import sys
from pathlib import Path

# `ray job submit --working-dir .` runs this file from the uploaded copy of the repo: make the
# package importable there even where it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparc_ray.batch.job import main

if __name__ == "__main__":
    sys.exit(main())
