"""Inference: what serving and batch scoring share. Loading a verified version (signature,
sha256, ONNX or the signed scikit-learn fallback), the scorers, the columns they take, the
input rules every path applies, probabilities to labels, isolating the rows a model fails
on, and per-row feature contributions (``explain``)."""

from typing import TYPE_CHECKING

from sparc_ray._lazy import exports

if TYPE_CHECKING:
    from sparc_ray.inference.columns import Columns as Columns
    from sparc_ray.inference.explain import Explainer as Explainer
    from sparc_ray.inference.explain import load_explainer as load_explainer
    from sparc_ray.inference.input_rules import CheckedColumn as CheckedColumn
    from sparc_ray.inference.input_rules import FeatureCheck as FeatureCheck
    from sparc_ray.inference.input_rules import check_column as check_column
    from sparc_ray.inference.input_rules import checks_from_metadata as checks_from_metadata
    from sparc_ray.inference.isolation import score_isolating as score_isolating
    from sparc_ray.inference.labels import labels_from_proba as labels_from_proba
    from sparc_ray.inference.loader import LoadedModel as LoadedModel
    from sparc_ray.inference.loader import ModelLoader as ModelLoader
    from sparc_ray.inference.loader import RegistryLoader as RegistryLoader

__getattr__, __all__ = exports(
    __name__,
    {
        "RegistryLoader": "loader",
        "LoadedModel": "loader",
        "ModelLoader": "loader",
        "Columns": "columns",
        "FeatureCheck": "input_rules",
        "CheckedColumn": "input_rules",
        "check_column": "input_rules",
        "checks_from_metadata": "input_rules",
        "score_isolating": "isolation",
        "labels_from_proba": "labels",
        "Explainer": "explain",
        "load_explainer": "explain",
    },
)
