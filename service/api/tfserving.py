"""TF Serving's REST API on the same batchers: status, metadata, predict (row and columnar)."""

from __future__ import annotations

import asyncio
import time

import orjson
from fastapi import APIRouter, Request

from service.api.pipeline import (
    ADMISSION,
    RequestScope,
    find_model,
    parse_version,
    protocol_status_codes,
    record,
    run_model,
    stage_timings,
)
from service.deps import ModelName, app_repository, app_state
from service.errors import bad_request, not_found
from service.openapi import PROTOCOL_ERRORS, TFSERVING_PREDICT
from service.protocols import tfserving
from service.repository import LoadedModel, ModelRepository
from service.responses import OrjsonResponse, server_timing
from service.schemas import ErrorBody
from service.state import AppState

router = APIRouter(
    tags=["TF Serving REST"], responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}}
)


async def _model(repository: ModelRepository, name: str, version: str | None) -> LoadedModel:
    return await find_model(repository, name, parse_version(version))


@router.get("/v1/models/{name}", summary="Version status of a model")
@router.get("/v1/models/{name}/versions/{version}", summary="Status of one version")
async def status(request: Request, name: ModelName, version: str | None = None) -> OrjsonResponse:
    async with protocol_status_codes():
        repository = app_repository(request)
        versions = repository.entries.get(name)
        if versions is None:
            known = ", ".join(sorted(repository.entries)) or "none"
            raise not_found(f"Servable not found for request: Latest({name}); models: {known}")
        wanted = parse_version(version)
        if wanted is not None and wanted not in versions:
            raise not_found(f"Servable not found for request: Specific({name}, {wanted})")
        chosen = (
            [versions[wanted]]
            if wanted is not None
            else [versions[v] for v in sorted(versions, reverse=True)]
        )
        statuses = [tfserving.version_status(e.version, e.state.value, e.error) for e in chosen]
        return OrjsonResponse({"model_version_status": statuses})


@router.get("/v1/models/{name}/metadata", summary="Signature definitions")
@router.get("/v1/models/{name}/versions/{version}/metadata", summary="Signatures of a version")
async def metadata(request: Request, name: ModelName, version: str | None = None) -> OrjsonResponse:
    async with protocol_status_codes():
        model = await _model(app_repository(request), name, version)
        return OrjsonResponse(tfserving.metadata(model.card))


@router.get("/v1/models/{name}/labels/{label}", summary="Not supported: use versions")
async def labels(name: ModelName, label: str) -> OrjsonResponse:
    raise not_found(
        f"version labels are not supported (asked for {label!r}); address a "
        f"version by number: /v1/models/{name}/versions/<n>"
    )


@router.post(
    "/v1/models/{name}:predict",
    summary="Predict (TF Serving REST)",
    openapi_extra=TFSERVING_PREDICT,
    responses=PROTOCOL_ERRORS,
)
@router.post(
    "/v1/models/{name}/versions/{version}:predict",
    summary="Predict with a version",
    openapi_extra=TFSERVING_PREDICT,
    responses=PROTOCOL_ERRORS,
)
async def predict(request: Request, name: ModelName, version: str | None = None) -> OrjsonResponse:
    """`{"instances": [...]}` or `{"inputs": ...}`: pixel lists or `{"b64": <image file>}`."""
    state = app_state(request)
    async with RequestScope(request, name, "tfserving_predict") as scope, protocol_status_codes():
        model = scope.hold(await _model(app_repository(request), name, version))
        scope.admit(model, ADMISSION)
        started = time.perf_counter()
        body = await request.body()
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(state.decoder, _parse, body, model, state)
        decode = time.perf_counter() - started
        outputs, stats = await run_model(scope, model, parsed.signature, parsed.images)
        started = time.perf_counter()
        answer = tfserving.predict_response(outputs, parsed.columnar)
        timings = stage_timings(decode, stats, started)
        record(state, model, timings)
        return OrjsonResponse(answer, headers={"Server-Timing": server_timing(timings)})


def _parse(body: bytes, model: LoadedModel, state: AppState) -> tfserving.PredictRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"the body is not valid JSON: {error}") from None
    settings = state.settings
    return tfserving.parse_predict(
        document, model.card, settings.max_image_pixels, settings.max_images_per_request
    )
