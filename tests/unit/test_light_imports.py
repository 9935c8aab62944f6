"""Registry tools and config checks do not pay for scikit-learn's import."""

import subprocess
import sys

from sparc_ray.training.config import MODEL_FAMILY_NAMES
from sparc_ray.training.estimator import MODEL_FAMILIES


def test_cli_config_and_registry_import_without_scikit_learn():
    code = (
        "import sys, sparc_ray.cli, sparc_ray.training.config, sparc_ray.registry.store, "
        "sparc_ray.registry.releases, sparc_ray.registry.layout, "
        "sparc_ray.registry.metadata; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'ray', 'scipy'}); "
        "print(heavy); assert not heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_names_every_model_family():
    assert tuple(MODEL_FAMILIES) == MODEL_FAMILY_NAMES
