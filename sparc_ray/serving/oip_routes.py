"""The Validator's Open Inference Protocol (V2) REST routes (the codec is ``serving.oip``).

``POST /v2/models/{name}[/versions/{v}]/infer`` goes through the Validator's ``/predict`` path
(``Validator._serve``): the same routing (canary, shadow, pin), input rules, micro-batching,
isolation, capture and metrics. Naming a version follows ``/model?version=``: what serves
(production, the pin, the candidate) is open, any other version needs the admin token; a
version-named request is answered by that version or not at all (503).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sparc_ray.registry.metadata import ModelMetadata
from sparc_ray.serving.oip import PLATFORMS, InferInput, parse_infer
from sparc_ray.serving.oip_answers import infer_response, model_metadata, server_metadata
from sparc_ray.serving.oip_docs import v2_route
from sparc_ray.serving.requests import RequestError, safe_name
from sparc_ray.serving.responses import error_response, json_response

if TYPE_CHECKING:
    from sparc_ray.inference.input_rules import FeatureCheck
    from sparc_ray.serving.settings import ValidatorSettings

router = APIRouter(tags=["Open Inference Protocol (V2)"])


def v2_error(exc: RequestError) -> RequestError:
    """V2 clients read ``error`` only: a client error is a 400 (413 stays) whose ``error``
    names the first problem's input and row."""
    error = exc.error
    first = exc.details[0] if exc.details else None
    if first and first.get("row") is not None and "row" not in error:
        error += f": input {first['feature']!r} row {first['row']}: {first['message']}"
    return RequestError(413 if exc.status == 413 else 400, error, exc.details)


class OipRoutes:
    """Mixed into the Validator (Serve's ingress finds inherited routes); uses its state."""

    name: str
    settings: ValidatorSettings

    if TYPE_CHECKING:

        async def _refused(self, request: Request, version: str) -> Response | None: ...

        async def _described(
            self, request: Request, version: str | None, wait_s: float
        ) -> dict[str, Any] | Response: ...

        async def _serve(
            self,
            request: Request,
            parse: Callable[[Any, list[FeatureCheck]], Any],
            shape: Callable[[Any, dict[str, Any], str, float], dict[str, Any]],
            version: str | None = None,
            errors: Callable[[RequestError], RequestError] | None = None,
        ) -> Response: ...

    # -- server and model metadata -----------------------------------------------------------
    @v2_route(router, "v2_server")
    async def v2_server(self) -> Response:
        return json_response(200, server_metadata())

    @v2_route(router, "v2_live")
    async def v2_live(self) -> Response:
        return json_response(200, {"live": True})

    @v2_route(router, "v2_ready")
    async def v2_ready(self, request: Request) -> Response:
        return await self._ready(request, None)

    @v2_route(router, "v2_model")
    async def v2_model(self, request: Request, name: str) -> Response:
        return await self._metadata(request, name, None)

    @v2_route(router, "v2_model_version")
    async def v2_model_version(self, request: Request, name: str, version: str) -> Response:
        return await self._metadata(request, name, version)

    @v2_route(router, "v2_model_ready")
    async def v2_model_ready(self, request: Request, name: str) -> Response:
        return self._unknown(name) or await self._ready(request, None)

    @v2_route(router, "v2_version_ready")
    async def v2_version_ready(self, request: Request, name: str, version: str) -> Response:
        return self._unknown(name) or await self._ready(request, version)

    # -- inference ---------------------------------------------------------------------------
    @v2_route(router, "v2_infer")
    async def v2_infer(self, request: Request, name: str) -> Response:
        return self._unknown(name) or await self._infer(request, None)

    @v2_route(router, "v2_version_infer")
    async def v2_version_infer(self, request: Request, name: str, version: str) -> Response:
        return (
            self._unknown(name)
            or await self._refused(request, version)
            or await self._infer(request, version)
        )

    async def _infer(self, request: Request, version: str | None) -> Response:
        limit = self.settings.max_instances

        def parse(body: Any, checks: list[FeatureCheck]) -> InferInput:
            return parse_infer(body, checks, limit)

        def shape(data: InferInput, result: dict[str, Any], pid: str, ms: float) -> dict[str, Any]:
            explained = result.get("explanations")
            parameters: dict[str, Any] = {"prediction_id": pid, "processing_time_ms": round(ms, 3)}
            if "explanation_error" in result:
                parameters["explanation_error"] = result["explanation_error"]
            return infer_response(
                self.name,
                result["model_version"],
                data.request_id,
                result["probabilities"],
                result["classes"],
                data.outputs,
                explained,
                labels=result["predictions"],
                parameters=parameters,
            )

        return await self._serve(request, parse, shape, version, v2_error)

    # -- helpers -----------------------------------------------------------------------------
    def _unknown(self, name: str) -> Response | None:
        if name == self.name:
            return None
        error = f"unknown model {safe_name(name)!r}: this server has one, {self.name!r}"
        return error_response(404, error, [(None, "name", error)])

    async def _ready(self, request: Request, version: str | None) -> Response:
        described = await self._described(request, version, self.settings.health_wait_s)
        if isinstance(described, Response):
            return described
        return json_response(200, {"ready": True, "version": described["version"]})

    async def _metadata(self, request: Request, name: str, version: str | None) -> Response:
        if unknown := self._unknown(name):
            return unknown
        described = await self._described(request, version, self.settings.reload_wait_s)
        if isinstance(described, Response):
            return described
        meta = ModelMetadata.from_json(described)
        platform = PLATFORMS.get(described["serving"]["engine"], "")
        explains = bool(meta.explanations and meta.explanations.ok)
        return json_response(200, model_metadata(meta, platform, explanations=explains))
