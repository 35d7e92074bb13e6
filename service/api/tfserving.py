"""TF Serving's REST API on the same batchers: status, metadata, predict (row and columnar)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from convbridge.card import ModelCard
from convbridge.signatures import CLASS_INDEX, CLASSIFY, EXPLAIN
from service.api.deps import ModelName, app_context, parse_version
from service.api.openapi import (
    LOOKUP_ERRORS,
    PROTOCOL_ERRORS,
    STARTING_ERRORS,
    TFSERVING_EXPLAIN,
    TFSERVING_PREDICT,
)
from service.api.outline import InferenceCall, engine_errors
from service.api.schemas import ErrorBody
from service.codecs import tfserving
from service.errors import bad_request, not_found
from service.inference import EngineLike, ModelNotFoundError, VersionStatus
from service.web.responses import OrjsonResponse

T = TypeVar("T")
router = APIRouter(
    tags=["TF Serving REST"], responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}}
)


@router.get("/v1/models/{name}", summary="Version status of a model", responses=STARTING_ERRORS)
@router.get(
    "/v1/models/{name}/versions/{version}",
    summary="Status of one version",
    responses=STARTING_ERRORS,
)
async def status(request: Request, name: ModelName, version: str | None = None) -> OrjsonResponse:
    chosen = servable_versions(app_context(request).engine, name, parse_version(version))
    statuses = [tfserving.version_status(v.version, v.state.value, v.error) for v in chosen]
    return OrjsonResponse({"model_version_status": statuses})


def servable_versions(engine: EngineLike, name: str, wanted: int | None) -> list[VersionStatus]:
    """The versions TF Serving's status reports, newest first (one when ``wanted``); 404 in
    TF Serving's words for an unknown model or version. REST and gRPC both answer from it."""
    with engine_errors(name):
        try:
            model = engine.status(name)
        except ModelNotFoundError:
            known = ", ".join(engine.names()) or "none"
            raise not_found(
                f"Servable not found for request: Latest({name}); models: {known}"
            ) from None
    if wanted is not None and model.version(wanted) is None:
        raise not_found(f"Servable not found for request: Specific({name}, {wanted})")
    return [v for v in reversed(model.versions) if wanted is None or v.version == wanted]


@router.get("/v1/models/{name}/metadata", summary="Signature definitions", responses=LOOKUP_ERRORS)
@router.get(
    "/v1/models/{name}/versions/{version}/metadata",
    summary="Signatures of a version",
    responses=LOOKUP_ERRORS,
)
async def metadata(request: Request, name: ModelName, version: str | None = None) -> OrjsonResponse:
    with engine_errors(name):
        model = await app_context(request).engine.model(name, parse_version(version))
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
async def predict(request: Request, name: ModelName, version: str | None = None) -> Response:
    """`{"instances": [...]}` or `{"inputs": ...}`: pixel lists or `{"b64": <image file>}`."""
    async with InferenceCall(request, name, "tfserving_predict", protocol=True) as call:
        # The signature is named inside the body: until it is read, the request waits for
        # a place in the classification queue, the one nearly every request uses.
        lease = await call.reserve(parse_version(version), CLASSIFY)
        parsed = await _read(call, request, lease.model.card, tfserving.parse_predict)
        result = await call.run(parsed.images, parsed.signature)
        answer = tfserving.predict_response(result.outputs, parsed.columnar)
        return call.respond(OrjsonResponse(answer))


@router.post(
    "/v1/models/{name}:explain",
    summary="Explain (KServe v1's verb): Grad-CAM heatmaps",
    openapi_extra=TFSERVING_EXPLAIN,
    responses=PROTOCOL_ERRORS,
)
@router.post(
    "/v1/models/{name}/versions/{version}:explain",
    summary="Explain with a version",
    openapi_extra=TFSERVING_EXPLAIN,
    responses=PROTOCOL_ERRORS,
)
async def explain(request: Request, name: ModelName, version: str | None = None) -> Response:
    """`{"instances": [...]}`: where the model looked for each image's class."""
    async with InferenceCall(request, name, "tfserving_explain", protocol=True) as call:
        lease = await call.reserve(parse_version(version), EXPLAIN)
        parsed = await _read(call, request, lease.model.card, tfserving.parse_explain)
        result = await call.run(parsed.images, extra={CLASS_INDEX: parsed.classes})
        answer = await call.encode(tfserving.explain_response, result.outputs, lease.model.card)
        return call.respond(OrjsonResponse(answer))


async def _read(
    call: InferenceCall,
    request: Request,
    card: ModelCard,
    parser: Callable[[Any, ModelCard, int, int], T],
) -> T:
    """The body, parsed by ``parser`` within the settings' limits (on the event loop or the
    decoder threads, by its size: see InferenceCall.parse)."""
    settings = call.context.settings
    limits = (settings.max_image_pixels, settings.max_images_per_request)
    body = await request.body()
    return await call.parse(_parse, body, card, *limits, parser, size=len(body))


def _parse(
    body: bytes,
    card: ModelCard,
    max_pixels: int,
    max_images: int,
    parser: Callable[[Any, ModelCard, int, int], T],
) -> T:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"the body is not valid JSON: {error}") from None
    return parser(document, card, max_pixels, max_images)
