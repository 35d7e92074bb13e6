"""KServe v2 / Open Inference Protocol, with the binary tensor data and classification
extensions, on the same batchers as the native API."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY
from service.api.deps import ModelName, app_context, parse_version
from service.api.openapi import KSERVE_INFER, LOOKUP_ERRORS, PROTOCOL_ERRORS, STARTING_ERRORS
from service.api.outline import InferenceCall, engine_errors, nbytes
from service.api.schemas import ErrorBody
from service.codecs import kserve
from service.errors import not_found, unavailable
from service.inference import ModelNotFoundError, State
from service.web.responses import OrjsonResponse

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
    is_ready = app_context(request).engine.readiness().ready
    return OrjsonResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}", summary="Model metadata", responses=LOOKUP_ERRORS)
@router.get(
    "/v2/models/{name}/versions/{version}", summary="Metadata of a version", responses=LOOKUP_ERRORS
)
async def model_metadata(
    request: Request, name: ModelName, version: str | None = None
) -> OrjsonResponse:
    engine = app_context(request).engine
    wanted = parse_version(version)
    with engine_errors(name):
        model = await engine.model(name, wanted)
        versions = engine.status(name).ready_versions
    return OrjsonResponse(kserve.model_metadata(model.card, versions))


@router.get("/v2/models/{name}/ready", summary="Model readiness", responses=STARTING_ERRORS)
@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Readiness of a version",
    responses=STARTING_ERRORS,
)
async def model_ready(
    request: Request, name: ModelName, version: str | None = None
) -> OrjsonResponse:
    engine = app_context(request).engine
    with engine_errors(name):
        try:
            model = engine.status(name)
        except ModelNotFoundError:
            model = None
    wanted = parse_version(version)
    if model is None or (wanted is not None and model.version(wanted) is None):
        raise not_found(f"model {name!r} version {version or 'latest'} not found")
    chosen = wanted if wanted is not None else model.served_version
    entry = model.version(chosen) if chosen is not None else None
    if entry is None or entry.state is not State.READY:
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
    async with InferenceCall(request, name, "kserve_infer", protocol=True) as call:
        # Outputs are named inside the body: until it is read, the request waits for a place
        # in the classification queue, the one nearly every request uses.
        lease = await call.reserve(parse_version(version), CLASSIFY)
        header = request.headers.get(kserve.HEADER_LENGTH)
        limit = call.context.settings.max_images_per_request
        body = await request.body()
        parsed = await call.parse(_parse, body, header, lease.model.card, limit, size=len(body))
        # Run the signatures the requested outputs come from, all at once when several are.
        runs = await asyncio.gather(
            *(
                call.run(parsed.images, signature, extra)
                for signature, extra in kserve.signatures_for(parsed)
            )
        )
        outputs = {name: value for run in runs for name, value in run.outputs.items()}
        content, length = await call.encode(
            kserve.encode_response, parsed, outputs, lease.model.card, size=nbytes(outputs)
        )
        if length is None:
            return call.respond(Response(content, media_type="application/json"))
        response = Response(content, media_type="application/octet-stream")
        response.headers[kserve.HEADER_LENGTH] = str(length)
        return call.respond(response)


def _parse(
    body: bytes, header: str | None, card: ModelCard, max_images: int
) -> kserve.InferRequest:
    document, binary = kserve.split_body(body, header)
    return kserve.parse_infer(document, binary, card, max_images)
