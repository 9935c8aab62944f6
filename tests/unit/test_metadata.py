"""metadata.json as a typed, versioned model: today's files (schema version 1, no
``schema_version``) load and upgrade, version 2 round-trips with unknown keys, a newer
version is refused saying which ones this code reads, and bad content names its field."""

import json

import pytest

from sparc_ray.inference.loader import LoadedModel
from sparc_ray.monitoring.drift import build_reference
from sparc_ray.registry import layout
from sparc_ray.registry.metadata import SCHEMA_VERSION, MetadataError, ModelMetadata
from sparc_ray.registry.store import ModelRegistry, RegistryError
from sparc_ray.serving.admin import public_metadata
from sparc_ray.training.evaluation import apply_gates, metrics_from_proba
from sparc_ray.training.onnx_export import export_onnx

FEATURES = [{"name": "x", "kind": "numeric"}]


def make_metadata(**fields) -> ModelMetadata:
    """Metadata with only what a test needs (plus the required keys)."""
    base = {"name": "m", "version": "v1", "sha256": "0" * 64, "classes": ["a", "b"]}
    return ModelMetadata.from_json({**base, "features": FEATURES, **fields})


@pytest.fixture(scope="module")
def v1_file(trained_loans_model, loans):
    """metadata.json as training and the registry wrote it before the schema was versioned."""
    model = trained_loans_model
    X, y = loans.drop(columns="decision"), loans["decision"]
    proba = model.predict_proba(X)
    holdout = metrics_from_proba(y.to_numpy(), proba, model.classes)
    _, onnx = export_onnx(model, X.head(50))
    meta = {
        "model_type": "random_forest",
        "params": {"n_estimators": 30, "max_depth": None},
        "created_at": "2026-11-26T06:15:17.005972+00:00",
        "target": "decision",
        "classes": model.classes,
        "features": [f.to_dict() for f in model.schema],
        "feature_importance": model.get_feature_importance(),
        "metrics": {
            "cv": {"mean": 0.91, "std": 0.02, "n_folds": 3, "scoring": "accuracy"},
            "holdout": holdout,
        },
        "gates": apply_gates(holdout, {"accuracy": 0.7, "n_rows": 10.0}),
        "training_data": {"source": "loans.csv", "rows": 600, "train_rows": 480},
        "search": {"experiment_path": "/x", "trials": 7, "stopped_early": 2},
        "reference": build_reference(X, model.schema, model.predict(X), model.classes),
        "library_versions": {"python": "3.11.9", "sparc_ray": "0.1.0"},
        "input_limits": model.input_limits(),
        "onnx": onnx,
        "name": "loans",
        "version": "v20261126-061517-005972-7910a4",
        "model_file": "model.joblib",
        "sha256": "ab" * 32,
    }
    return json.dumps(meta, indent=2, default=str).encode()


def test_a_version_1_file_loads_upgraded_and_gives_back_the_same_json(v1_file):
    raw = json.loads(v1_file)
    meta = ModelMetadata.from_json(v1_file)
    assert meta.schema_version == SCHEMA_VERSION == 2
    assert meta.classes == ["approved", "rejected", "review"] and meta.target == "decision"
    assert meta.feature_names[:4] == ["income", "age", "debt", "employment"]
    assert meta.feature_kinds[2:4] == ["numeric", "categorical"]
    assert meta.onnx.status == "ok" and meta.onnx_file() == ("model.onnx", raw["onnx"]["sha256"])
    assert meta.gates.passed and meta.gates.results["n_rows"].value == 600  # an int stays one
    assert meta.metrics.holdout.accuracy == raw["metrics"]["holdout"]["accuracy"]
    assert set(meta.reference.features) == {f["name"] for f in raw["features"]}
    # The same JSON object, key for key and value for value, plus schema_version.
    assert json.dumps(meta.to_dict()) == json.dumps({"schema_version": 2, **raw})
    assert ModelMetadata.from_json(json.dumps(meta.to_dict())) == meta  # reads itself back


def test_version_1_without_input_limits_gets_none_and_the_dict_and_text_forms_load():
    old = {"name": "m", "version": "v1", "sha256": "0" * 64, "classes": [0, 1]}
    old["features"] = FEATURES
    for form in (old, json.dumps(old), json.dumps(old).encode()):
        meta = ModelMetadata.from_json(form)
        assert meta.input_limits == {} and meta.schema_version == 2
        assert meta.to_dict() == {"schema_version": 2, **old, "input_limits": {}}
    assert "schema_version" not in old  # the caller's dict is not changed
    assert ModelMetadata.from_json({**old, "input_limits": None}).input_limits == {}
    assert ModelMetadata.from_json({**old, "schema_version": 1}).schema_version == 2


def test_version_2_round_trips_and_keeps_keys_this_code_does_not_know():
    meta = make_metadata(
        schema_version=2,
        drift_policy={"window": 5},  # a key from newer code
        onnx={"status": "fallback", "reason": "r", "runtime": "x"},  # and a nested one
        classes=[True, False],
    )
    assert meta.onnx.reason == "r" and meta.onnx_file() is None
    assert meta.to_dict()["drift_policy"] == {"window": 5}
    assert meta.to_dict()["onnx"] == {"status": "fallback", "reason": "r", "runtime": "x"}
    assert meta.classes == [True, False]  # labels are never coerced
    again = ModelMetadata.from_json(json.dumps(meta.to_dict()))
    assert again == meta and again.to_dict() == meta.to_dict()


def test_a_newer_schema_version_is_refused_saying_which_versions_this_code_reads():
    with pytest.raises(MetadataError, match=r"schema_version 3.*reads schema versions 1 to 2"):
        make_metadata(schema_version=3)
    with pytest.raises(MetadataError, match="schema_version: expected an integer"):
        make_metadata(schema_version="2")
    assert issubclass(MetadataError, ValueError)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"features": None}, "features"),
        ({"sha256": 5}, "sha256"),
        ({"classes": [["a"]]}, "classes.0"),
        ({"features": [{"name": "x", "kind": "text"}]}, "features.0.kind"),
        ({"features": [{"kind": "numeric"}]}, "features.0.name"),
        ({"input_limits": {"x": "big"}}, "input_limits.x"),
        ({"onnx": {"status": "ok"}}, "onnx"),  # ok without its file and sha256
        ({"gates": {"passed": "maybe"}}, "gates.passed"),
    ],
)
def test_bad_content_is_an_error_naming_the_field(changes, field):
    with pytest.raises(MetadataError, match=rf"invalid metadata\.json: {field}: "):
        make_metadata(**changes)


def test_missing_keys_and_non_json_are_errors():
    with pytest.raises(MetadataError, match="version: Field required"):
        ModelMetadata.from_json({"name": "m", "sha256": "0", "classes": [], "features": []})
    with pytest.raises(MetadataError, match="not valid JSON"):
        ModelMetadata.from_json(b"{not json")
    with pytest.raises(MetadataError, match="must be a JSON object"):
        ModelMetadata.from_json("[1, 2]")


def test_the_registry_stamps_the_version_and_refuses_bad_metadata(tmp_path, trained_loans_model):
    reg = ModelRegistry(tmp_path / "store")
    v = reg.publish("m", trained_loans_model, {"classes": ["a"], "features": FEATURES})
    raw = json.loads((reg.root_path / "m" / v / layout.METADATA_FILE).read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and reg.metadata("m", v).version == v
    with pytest.raises(RegistryError, match=r"cannot publish .*features: Field required"):
        reg.publish("m", trained_loans_model, {"classes": ["a"]})
    assert reg.versions("m") == [v]  # nothing written
    assert [p.name for p in (reg.root_path / "m").iterdir()] == [v]
    path = reg.root_path / "m" / v / layout.METADATA_FILE
    path.write_text(json.dumps({**raw, "schema_version": 9}))
    with pytest.raises(RegistryError, match=f"m/{v}: .*schema_version 9"):
        reg.metadata("m", v)


def test_what_the_api_shows_is_the_file_plus_serving(v1_file):
    raw = json.loads(v1_file)
    loaded = LoadedModel(None, ModelMetadata.from_json(v1_file), "onnx", signed_by="k")
    described = loaded.describe()
    serving = {"engine": "onnx", "reason": None, "signed_by": "k"}
    assert described == {"schema_version": 2, **raw, "serving": serving}
    public = public_metadata(described)
    fields = "name version created_at model_type target classes features serving"
    assert list(public) == fields.split()
    assert public["features"][3] == {
        "name": "employment",
        "kind": "categorical",
        "categories": raw["features"][3]["categories"],
    }
    assert public["serving"] == {"engine": "onnx"} and public["classes"] == raw["classes"]
