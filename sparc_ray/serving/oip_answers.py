"""Open Inference Protocol (V2) answers: ``GET /v2``, ``GET /v2/models/{name}[/versions/{v}]``
and the infer response (the request side is ``serving.oip``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from sparc_ray import __version__
from sparc_ray.inference.labels import labels_from_proba
from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.oip import (
    CONTENT_TYPE,
    EXPLANATIONS,
    PLATFORMS,
    PREDICT,
    PREDICT_PROBA,
    PROBA_DECIMALS,
    SERVER_NAME,
)


def server_metadata() -> dict[str, Any]:
    """``GET /v2``. No protocol extension is implemented (no binary data, no shared memory)."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": []}


def label_datatype(classes: Sequence[Any]) -> str:
    """The ``predict`` datatype: INT64 for integer classes, BYTES for strings (FP64, BOOL)."""
    kinds = set(map(type, classes))
    if kinds in ({bool}, {int}):
        return "BOOL" if kinds == {bool} else "INT64"
    return "FP64" if kinds <= {int, float} else "BYTES"


def model_metadata(
    meta: ModelMetadata, platform: str = PLATFORMS["onnx"], explanations: bool = False
) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: inputs in the model's feature order (numeric
    FP64, categorical BYTES; -1 is the batch dimension), outputs (``explanations`` if asked)."""
    outputs = [
        {"name": PREDICT, "datatype": label_datatype(meta.classes), "shape": [-1]},
        {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(meta.classes)]},
    ] + ([{"name": EXPLANATIONS, "datatype": "BYTES", "shape": [-1]}] if explanations else [])
    inputs = [
        {"name": f.name, "datatype": "FP64" if f.kind == "numeric" else "BYTES", "shape": [-1]}
        for f in meta.features
    ]
    return {
        "name": meta.name,
        "versions": [meta.version],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"content_type": CONTENT_TYPE},
    }


def infer_response(
    model_name: str,
    version: str,
    request_id: str | None,
    proba: np.ndarray | Sequence[Sequence[float]] | None,
    classes: Sequence[Any],
    outputs: Sequence[str],
    explanations: Sequence[Mapping[str, Any]] | None = None,
    *,
    labels: Sequence[Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The V2 infer answer with the ``outputs`` asked for. ``labels`` are the Postprocessor's
    when given, else ``labels_from_proba`` (the one rule). ``explanations`` (one dict per row)
    add a BYTES output ``explanations``, shape ``[N]``, each element a JSON object as a string.
    ``parameters`` join ``{"content_type": "pd"}`` (e.g. the ``prediction_id``)."""
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
    if labels is not None:
        data = np.asarray(labels).tolist()
    elif proba is not None:
        data = labels_from_proba(proba, classes).tolist()
    else:
        raise ValueError("infer_response needs the probabilities or the labels")
    n, n_classes = len(data), len(classes)
    shaped = []
    for name in outputs:
        if name == PREDICT:
            shaped.append(_output(PREDICT, label_datatype(classes), [n], data))
        elif name == PREDICT_PROBA and proba is not None and proba.shape == (n, n_classes):
            flat = proba.round(PROBA_DECIMALS).ravel().tolist()
            shaped.append(_output(PREDICT_PROBA, "FP64", [n, n_classes], flat))
        else:
            raise ValueError(f"cannot answer output {name!r} (probabilities of {n} rows?)")
    if explanations is not None:
        if len(explanations) != n:
            raise ValueError(f"{len(explanations)} explanations for {n} rows")
        rows = [orjson.dumps(e, option=orjson.OPT_SERIALIZE_NUMPY).decode() for e in explanations]
        shaped.append(_output(EXPLANATIONS, "BYTES", [n], rows))
    return {
        "model_name": model_name,
        "model_version": version,
        **({} if request_id is None else {"id": request_id}),
        "parameters": {"content_type": CONTENT_TYPE, **(parameters or {})},
        "outputs": shaped,
    }


def _output(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    if datatype == "BYTES":  # MLServer's string codec decodes them as str
        out["parameters"] = {"content_type": "str"}
    return out
