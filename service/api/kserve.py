"""KServe v2 / Open Inference Protocol, with the binary tensor data and classification
extensions, on the same batchers as the native API."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

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
from service.batching import BatchStats
from service.deps import ModelName, app_repository, app_state
from service.errors import not_found, unavailable
from service.openapi import KSERVE_INFER, PROTOCOL_ERRORS
from service.protocols import kserve
from service.repository import LoadedModel, State
from service.responses import OrjsonResponse, server_timing
from service.schemas import ErrorBody
from service.state import AppState

router = APIRouter(
    tags=["KServe v2"], responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}}
)
EXTENSIONS = ["binary_tensor_data", "classification"]


@router.get("/v2", summary="Server metadata")
async def server_metadata(request: Request) -> OrjsonResponse:
    version = request.app.version
    return OrjsonResponse({"name": "convbridge", "version": version, "extensions": EXTENSIONS})


@router.get("/v2/health/live", summary="Server liveness")
async def live() -> OrjsonResponse:
    return OrjsonResponse({"live": True})


@router.get("/v2/health/ready", summary="Server readiness")
async def ready(request: Request) -> OrjsonResponse:
    state = app_state(request)
    is_ready = state.repository is not None and state.repository.readiness()[0]
    return OrjsonResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}", summary="Model metadata")
@router.get("/v2/models/{name}/versions/{version}", summary="Metadata of a version")
async def model_metadata(
    request: Request, name: ModelName, version: str | None = None
) -> OrjsonResponse:
    async with protocol_status_codes():
        repository = app_repository(request)
        model = await find_model(repository, name, parse_version(version))
        versions = sorted(v for v, e in repository.entries[name].items() if e.state is State.READY)
        return OrjsonResponse(kserve.model_metadata(model.card, versions))


@router.get("/v2/models/{name}/ready", summary="Model readiness")
@router.get("/v2/models/{name}/versions/{version}/ready", summary="Readiness of a version")
async def model_ready(
    request: Request, name: ModelName, version: str | None = None
) -> OrjsonResponse:
    async with protocol_status_codes():
        repository = app_repository(request)
        versions = repository.entries.get(name)
        wanted = parse_version(version)
        if versions is None or (wanted is not None and wanted not in versions):
            raise not_found(f"model {name!r} version {version or 'latest'} not found")
        chosen = wanted if wanted is not None else repository.served_version(name)
        if chosen is None or versions[chosen].state is not State.READY:
            raise unavailable(f"model {name!r} is not ready", retry_after=2)
        return OrjsonResponse({"name": name, "version": str(chosen), "ready": True})


@router.post(
    "/v2/models/{name}/infer",
    summary="Inference (KServe v2)",
    openapi_extra=KSERVE_INFER,
    responses=PROTOCOL_ERRORS,
)
@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Inference with a version",
    openapi_extra=KSERVE_INFER,
    responses=PROTOCOL_ERRORS,
)
async def infer(request: Request, name: ModelName, version: str | None = None) -> Response:
    """JSON tensors, or a JSON header plus binary tensors (`Inference-Header-Content-Length`)."""
    state = app_state(request)
    async with RequestScope(request, name, "kserve_infer") as scope, protocol_status_codes():
        model = scope.hold(await find_model(app_repository(request), name, parse_version(version)))
        scope.admit(model, ADMISSION)
        started = time.perf_counter()
        body = await request.body()
        header = request.headers.get(kserve.HEADER_LENGTH)
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(state.decoder, _parse, body, header, model, state)
        decode = time.perf_counter() - started
        results, stats = await _run(scope, model, parsed)
        started = time.perf_counter()
        content, header_length = await loop.run_in_executor(
            state.decoder, kserve.encode_response, parsed, results, model.card
        )
        timings = stage_timings(decode, stats, started)
        record(state, model, timings)
        headers = {"Server-Timing": server_timing(timings)}
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers["Inference-Header-Content-Length"] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)


def _parse(
    body: bytes, header: str | None, model: LoadedModel, state: AppState
) -> kserve.InferRequest:
    document, binary = kserve.split_body(body, header)
    return kserve.parse_infer(document, binary, model.card, state.settings.max_images_per_request)


async def _run(
    scope: RequestScope, model: LoadedModel, parsed: kserve.InferRequest
) -> tuple[dict[str, np.ndarray], BatchStats]:
    """Run the signatures the requested outputs come from (both at once when both are asked)."""
    names = {output.name for output in parsed.outputs}
    signatures = []
    if kserve.PROBABILITIES in names:
        signatures.append("serving_default")
    if names - {kserve.PROBABILITIES}:
        signatures.append("feature_maps")
    runs = await asyncio.gather(*(run_model(scope, model, s, parsed.images) for s in signatures))
    results: dict[str, np.ndarray] = {}
    for outputs, _ in runs:
        results.update(outputs)
    return results, runs[0][1]
