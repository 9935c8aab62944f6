"""Open Inference Protocol (V2) REST codec, pure functions: the ``POST .../infer`` request (the
answers are ``serving.oip_answers``).

Requests follow MLServer's pandas convention (``parameters.content_type: "pd"``): one input per
feature, shape ``[N]`` or ``[N, 1]``; numbers FP64 / FP32 / INT* / BOOL, categories BYTES. An
all-numeric model also takes one 2-D input ``[N, F]``. Every value goes through the shared
input rules (``check_columns``), so it gets ``/predict``'s words. ``null`` is missing, and so is
``NaN`` in an FP64 / FP32 input (numpy-based clients such as ``tritonclient`` have no other
way). Errors are ``RequestError`` 400 (413 past ``max_instances``) naming input and row (from
0): ``input 'age' row 3: expected a number, got str 'x'``. Binary tensor data and shared
memory are refused; answers are JSON (``binary_data`` / ``binary_data_output`` are ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sparc_ray.inference.columns import Columns
from sparc_ray.inference.input_rules import FeatureCheck, NonFinite, check_columns, show
from sparc_ray.serving.requests import MAX_DETAILS, PredictInput, RequestError, detail, safe_name

SERVER_NAME = "sparc-ray"
CONTENT_TYPE = "pd"  # MLServer's pandas codec: one input (and output) per column
PREDICT, PREDICT_PROBA, EXPLANATIONS = "predict", "predict_proba", "explanations"
OUTPUTS = (PREDICT, PREDICT_PROBA)  # answered when a request names no output
PLATFORMS = {"onnx": "onnxruntime_onnx", "sklearn": "sklearn"}  # engine -> platform
PROBA_DECIMALS = 6  # as /predict rounds them (serving.responses.shape_responses)
FLOATS = frozenset({"FP64", "FP32"})
NUMBERS = FLOATS | {"BOOL"} | {f"{s}INT{b}" for s in ("", "U") for b in (8, 16, 32, 64)}
ERRORS_SHOWN = 3  # problems named in the error string; up to MAX_DETAILS in details
_REQUEST_KEYS = {"id", "inputs", "outputs", "parameters", "model_name", "model_version"}
_INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}
_INPUT_CONTENT_TYPES = (None, "str", "np")
_SEND_JSON = "send the values in 'data' (tritonclient: set_data_from_numpy(a, binary_data=False))"
_MISSING = frozenset({"NaN"})  # the non-finite token that is a missing value in a float input
_Column = tuple[str, str, list[Any]]  # how errors name it, datatype, values


@dataclass(frozen=True)
class InferInput:
    """A checked infer request: one array per feature in the model's order (what
    ``parse_predict`` builds from the same rows), the client's ``id``, the outputs asked for
    (in the request's order) and whether explanations were asked for."""

    columns: Columns
    n_rows: int
    request_id: str | None
    outputs: tuple[str, ...]
    explain: bool

    def predict_input(self) -> PredictInput:
        """The request as the ``/predict`` path carries it (probabilities when asked for)."""
        return PredictInput(self.columns, self.n_rows, PREDICT_PROBA in self.outputs, self.explain)


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]  # flattened, row-major


def parse_infer(body: Any, features: list[FeatureCheck], max_instances: int) -> InferInput:
    """Check a V2 infer body (decoded by ``requests.parse_json``) against a version's features
    and return one checked array per feature, in the model's order. ``parameters.explain:
    true`` (or naming the ``explanations`` output) sets ``explain``; other request parameters
    (``priority``, ``timeout``, custom ones) are ignored."""
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object with an 'inputs' array")
    if unknown := sorted(set(body) - _REQUEST_KEYS):
        raise _bad(f"unknown request field {safe_name(unknown[0])!r}", unknown[0])
    request_id = body.get("id")
    if request_id is not None and not _is_text(request_id):
        raise _bad("'id' must be a string (UTF-8)", "id")
    params = _parameters(body.get("parameters"), "request")
    if params.get("content_type") not in (None, CONTENT_TYPE, "np"):
        raise _bad(f"content_type {show(params['content_type'])} is not supported; use 'pd'")
    if not isinstance(explain := params.get("explain", False), bool):
        raise _bad("parameters.explain must be true or false", "explain")
    outputs, explain = _requested(body.get("outputs"), explain)
    raw = body.get("inputs")
    if not isinstance(raw, list) or not raw:
        raise _bad("'inputs' must be a non-empty array of tensors", "inputs")
    tensors = [_tensor(t, i) for i, t in enumerate(raw)]
    one = tensors[0]
    if len(tensors) == 1 and one.name not in {f.name for f in features} and len(one.shape) == 2:
        n_rows, columns = _from_matrix(one, features)
    else:
        n_rows, columns = _from_inputs(tensors, features)
    if n_rows == 0:
        raise _bad("the inputs hold no rows (shape [0])")
    if n_rows > max_instances:
        error = f"{n_rows} rows; the limit is {max_instances} per request (split it)"
        raise RequestError(413, error, [detail(None, None, error)])
    return InferInput(_checked(columns, features), n_rows, request_id, outputs, explain)


def _bad(error: str, name: str | None = None) -> RequestError:
    return RequestError(400, error, [detail(None, safe_name(name) if name else None, error)])


def _is_text(value: Any) -> bool:
    """A string JSON can carry back (no lone UTF-16 surrogate)."""
    return isinstance(value, str) and safe_name(value) == value[:200]


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is not None and not isinstance(raw, dict):
        raise _bad(f"{where}: 'parameters' must be a JSON object")
    return raw or {}


def _requested(raw: Any, explain: bool) -> tuple[tuple[str, ...], bool]:
    """The outputs asked for (all when none is named), and ``explain``."""
    if raw is None or raw == []:
        return OUTPUTS, explain
    names: list[str] = []
    for item in raw if isinstance(raw, list) else [None]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _bad("'outputs' must be an array of {\"name\": ...} objects", "outputs")
        name = item["name"]
        if name not in (*OUTPUTS, EXPLANATIONS) or set(item) - {"name", "parameters"}:
            known = ", ".join(map(repr, (*OUTPUTS, EXPLANATIONS)))
            raise _bad(f"unknown output {safe_name(name)!r} (or field); outputs: {known}", name)
        if set(_parameters(item.get("parameters"), f"output {name!r}")) - {"binary_data"}:
            raise _bad(f"output {name!r}: only parameter binary_data is supported", name)
        if name not in names:  # asked for twice: answered once
            names.append(name)
    return tuple(n for n in names if n != EXPLANATIONS), explain or EXPLANATIONS in names


def _tensor(raw: Any, index: int) -> _Tensor:
    """One request input, its data flattened (row-major) and its size checked."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise _bad(f"inputs[{index}] must be an object with a string 'name'", "inputs")
    name = raw["name"]
    where = f"input {safe_name(name)!r}"
    if unknown := sorted(set(raw) - _INPUT_KEYS):
        raise _bad(f"{where}: unknown field {safe_name(unknown[0])!r}", name)
    params = _parameters(raw.get("parameters"), where)
    if "binary_data_size" in params or any(str(k).startswith("shared_mem") for k in params):
        raise _bad(f"{where}: binary data and shared memory are not supported; {_SEND_JSON}", name)
    if params.get("content_type") not in _INPUT_CONTENT_TYPES:
        raise _bad(f"{where}: content_type {show(params['content_type'])} is not supported", name)
    shape, datatype, data = raw.get("shape"), raw.get("datatype"), raw.get("data")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise _bad(f"{where}: shape must be [N], [N, 1] or [N, F] (sizes >= 0)", name)
    if not isinstance(datatype, str) or not isinstance(data, list):
        raise _bad(f"{where}: needs a 'datatype' string and a 'data' array; {_SEND_JSON}", name)
    if len(shape) == 2 and data and isinstance(data[0], list):  # nested: one list per row
        rows_fit = all(isinstance(r, list) and len(r) == shape[1] for r in data)
        if len(data) != shape[0] or not rows_fit:
            raise _bad(f"{where}: nested 'data' does not match shape {shape}", name)
        data = [v for row in data for v in row]
    if len(data) != math.prod(shape):
        raise _bad(
            f"{where}: 'data' has {len(data)} values; shape {shape} holds {math.prod(shape)}", name
        )
    return _Tensor(name, tuple(shape), datatype, data)


def _column(where: str, t: _Tensor, f: FeatureCheck, values: list[Any]) -> _Column:
    """The column of feature ``f`` if ``t``'s datatype fits its kind."""
    if t.datatype not in (NUMBERS if f.numeric else {"BYTES"}):
        kind, send = ("numeric", "FP64 or INT64") if f.numeric else ("categorical", "BYTES")
        why = f"datatype {show(t.datatype)} does not fit {kind} feature {f.name!r}; send {send}"
        raise _bad(f"{where}: {why}", f.name)
    return where, t.datatype, values


def _from_inputs(tensors: list[_Tensor], features: list[FeatureCheck]) -> tuple[int, list[_Column]]:
    """One input per feature: all present, none unknown or twice, one value per row each."""
    by_name: dict[str, _Tensor] = {}
    for t in tensors:
        if by_name.setdefault(t.name, t) is not t:
            raise _bad(f"input {safe_name(t.name)!r} is given twice", t.name)
    missing = [(f.name, "missing input") for f in features if f.name not in by_name]
    known = {f.name for f in features}
    problems = missing + [(safe_name(n), "unknown input") for n in by_name if n not in known]
    if problems:
        text = "; ".join(f"{why} {n!r}" for n, why in problems[:ERRORS_SHOWN])
        more = " (more in 'details')" if len(problems) > ERRORS_SHOWN else ""
        error = f"the inputs do not match the model's features: {text}{more}"
        raise RequestError(400, error, [detail(None, n, w) for n, w in problems[:MAX_DETAILS]])
    n_rows, first = by_name[features[0].name].shape[0], features[0].name
    columns = []
    for f in features:
        t, where = by_name[f.name], f"input {f.name!r}"
        if t.shape[1:] not in ((), (1,)):
            raise _bad(f"{where}: shape {list(t.shape)} is not [N] or [N, 1]", f.name)
        if t.shape[0] != n_rows:
            raise _bad(f"{where} has {t.shape[0]} rows; input {first!r} has {n_rows}", f.name)
        columns.append(_column(where, t, f, t.data))
    return n_rows, columns


def _from_matrix(t: _Tensor, features: list[FeatureCheck]) -> tuple[int, list[_Column]]:
    """One 2-D input ``[N, F]`` for an all-numeric model, columns in feature order."""
    where, (n_rows, width) = f"input {safe_name(t.name)!r}", t.shape
    if width != len(features) or not all(f.numeric for f in features):
        why = f"one column per feature of an all-numeric model ({len(features)} features)"
        raise _bad(f"{where}: a 2-D input [N, F] takes {why}; or send one input each", t.name)
    return n_rows, [
        _column(f"{where} (feature {f.name!r})", t, f, t.data[j::width])
        for j, f in enumerate(features)
    ]


def _prepared(datatype: str, values: list[Any]) -> list[Any]:
    """The values as the shared rules take them: NaN in a float input is missing, BOOL 0 / 1."""
    if datatype in FLOATS and NonFinite in set(map(type, values)):
        return [None if type(v) is NonFinite and v.token in _MISSING else v for v in values]
    return [float(v) if type(v) is bool else v for v in values] if datatype == "BOOL" else values


def _checked(columns: list[_Column], features: list[FeatureCheck]) -> Columns:
    """Every value through the shared rules (``check_columns``); a 400 naming input and row
    for bad ones."""
    prepared = [_prepared(column[1], column[2]) for column in columns]
    out: Columns = {}
    details: list[dict[str, Any]] = []
    lines: list[str] = []
    checked_columns = check_columns(prepared, features)
    for column, f, checked in zip(columns, features, checked_columns, strict=True):
        out[f.name] = checked.values
        for row, why in sorted(checked.reasons.items()):
            details.append(detail(row, f.name, why))
            lines.append(f"{column[0]} row {row}: {why}")
        if len(details) >= MAX_DETAILS:
            break
    if details:
        more = " (more in 'details')" if len(lines) > ERRORS_SHOWN else ""
        raise RequestError(400, "; ".join(lines[:ERRORS_SHOWN]) + more, details[:MAX_DETAILS])
    return out
