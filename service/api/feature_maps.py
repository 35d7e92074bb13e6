"""POST /models/{name}/feature-maps: intermediate layer outputs for one image."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.api.pipeline import RequestScope, find_model, infer, one_image, record, stage_timings
from service.api.uploads import read_uploads
from service.deps import ModelName, Version, app_repository, app_state
from service.errors import unprocessable
from service.featuremaps import LayerOutput, SelectionError, encode_npy, select_and_reduce
from service.openapi import ERRORS, IMAGE_REQUEST
from service.rendering import RenderError, render_png
from service.repository import LoadedModel
from service.responses import OrjsonResponse, milliseconds, server_timing
from service.schemas import FeatureMapsResponse

router = APIRouter(tags=["native"])
# A PNG grid without ?channels= shows this many channels of each layer (all of a small one).
PNG_DEFAULT_CHANNELS = {"map": "0:64", "vector": "0:1024"}
_MEDIA = {
    "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
    "application/zip": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
}


@router.post(
    "/models/{name}/feature-maps",
    response_model=FeatureMapsResponse,
    responses={**ERRORS, 200: {"content": _MEDIA, "description": "json, npy/npz or png"}},
    openapi_extra=IMAGE_REQUEST,
    summary="Intermediate feature maps of one image",
)
async def feature_maps(
    request: Request,
    name: ModelName,
    version: Version = None,
    layers: str | None = Query(
        None, description="comma-separated layer names; default all", examples=["conv1,bridge"]
    ),
    format: Literal["json", "npy", "png"] = Query("json", description="response format"),  # noqa: A002
    channels: str | None = Query(
        None, description="channels of each layer: 0:16, 3 or 0,5,9", examples=["0:16"]
    ),
    reduce: Literal["none", "mean", "max", "l2"] = Query(
        "none", description="over the spatial axes: mean, max, or the L2-normalised mean"
    ),
) -> Response:
    """Send one image; pick layers, channels, a reduction and a format."""
    state, repository = app_state(request), app_repository(request)
    async with RequestScope(request, name, "feature_maps") as scope:
        model = scope.hold(await find_model(repository, name, version))
        scope.admit(model, "feature_maps")
        wanted = _layer_names(model, layers)
        uploads = await read_uploads(request, state.settings.max_images_per_request)
        one_image(len(uploads))
        result = await infer(scope, model, "feature_maps", uploads)
        started = time.perf_counter()
        selected = _select(wanted, result.outputs, channels, reduce, format)
        headers = {"X-Model-Version": str(model.version)}
        if format == "json":
            body = {
                "model": model.name,
                "version": model.version,
                "image": {"filename": uploads[0].filename, **result.images[0].describe()},
                "layers": {o.name: {**o.summary(), "values": o.values} for o in selected},
            }
            timings = stage_timings(result.decode_seconds, result.stats, started)
            body["timings_ms"] = milliseconds(timings)
            response: Response = OrjsonResponse(body, headers=headers)
        else:
            response = _binary(model, selected, format, headers)
            timings = stage_timings(result.decode_seconds, result.stats, started)
        response.headers["Server-Timing"] = server_timing(timings)
        record(state, model, timings)
        return response


def _layer_names(model: LoadedModel, layers: str | None) -> list[str]:
    available = model.card.layer_names
    if layers is None or not layers.strip():
        return list(available)
    wanted = list(dict.fromkeys(part.strip() for part in layers.split(",") if part.strip()))
    unknown = [layer for layer in wanted if layer not in available]
    if unknown:
        raise unprocessable(
            f"unknown layer(s) {', '.join(unknown)} for model {model.name!r}; "
            f"valid layers: {', '.join(available)}",
            valid_layers=list(available),
        )
    return wanted


def _select(
    wanted: list[str],
    outputs: dict[str, Any],
    channels: str | None,
    reduce: str,
    format: str,
) -> list[LayerOutput]:  # noqa: A002
    selected = []
    for layer in wanted:
        values = outputs[layer][0]
        kind = "map" if values.ndim == 3 and reduce == "none" else "vector"
        chosen = channels if channels is not None or format != "png" else PNG_DEFAULT_CHANNELS[kind]
        try:
            selected.append(select_and_reduce(layer, values, chosen, reduce))
        except SelectionError as error:
            raise unprocessable(f"layer {layer}: {error}") from None
    return selected


def _binary(
    model: LoadedModel,
    selected: list[LayerOutput],
    format: str,  # noqa: A002
    headers: dict[str, str],
) -> Response:
    stem = f"{model.name}-v{model.version}-feature-maps"
    if format == "npy":
        body, media, suffix = encode_npy(selected)
    else:
        try:
            body, grids = render_png(selected)
        except RenderError as error:
            raise unprocessable(str(error)) from None
        media, suffix = "image/png", "png"
        headers["X-Feature-Grid"] = "; ".join(grids)
    headers["Content-Disposition"] = f'inline; filename="{stem}.{suffix}"'
    return Response(body, media_type=media, headers=headers)
