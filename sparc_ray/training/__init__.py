"""Training: the job (load → validate → Tune search → refit → gates → publish), its typed
config and arguments, the search space, the Tune search itself, the estimator
(``SPARCClassificationModel``, the seed's interface), evaluation and gates, the report, the ONNX
export and MLflow tracking."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.training.config import ConfigError as ConfigError
    from sparc_ray.training.config import TrainConfig as TrainConfig
    from sparc_ray.training.estimator import MODEL_FAMILIES as MODEL_FAMILIES
    from sparc_ray.training.estimator import SPARCClassificationModel as SPARCClassificationModel
    from sparc_ray.training.job import main as main
    from sparc_ray.training.job import run_training as run_training
    from sparc_ray.training.job_args import load_config as load_config

__getattr__, __all__ = exports(
    __name__,
    {
        "SPARCClassificationModel": "estimator",
        "MODEL_FAMILIES": "estimator",
        "TrainConfig": "config",
        "load_config": "job_args",
        "ConfigError": "config",
        "run_training": "job",
        "main": "job",
    },
)
