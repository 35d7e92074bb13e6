"""POST /models/{name}/feature-maps: intermediate layer outputs for one image."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from convbridge.signatures import FEATURE_MAPS
from service.api.deps import ModelName, Version
from service.api.openapi import ERRORS, IMAGE_REQUEST
from service.api.outline import InferenceCall
from service.api.schemas import FeatureMapsResponse
from service.api.uploads import read_one_upload
from service.codecs.layer_outputs import LayerOutput, SelectionError, encode_npy, select_and_reduce
from service.codecs.rendering import RenderError, render_png
from service.errors import unprocessable
from service.inference import ModelInfo
from service.web.responses import OrjsonResponse, milliseconds

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
    format: Literal["json", "npy", "png"] = Query("json", description="response format"),
    channels: str | None = Query(
        None, description="channels of each layer: 0:16, 3 or 0,5,9", examples=["0:16"]
    ),
    reduce: Literal["none", "mean", "max", "l2"] = Query(
        "none", description="over the spatial axes: mean, max, or the L2-normalised mean"
    ),
) -> Response:
    """Send one image; pick layers, channels, a reduction and a format."""
    async with InferenceCall(request, name, "feature_maps") as call:
        lease = await call.reserve(version, FEATURE_MAPS)
        wanted = _layer_names(lease.model, layers)
        limit = call.context.settings.max_images_per_request
        uploads = await read_one_upload(request, limit, "feature-maps")
        images = await call.decode(uploads)
        result = await call.run(images[0].pixels[None])
        selected = _select(wanted, result.outputs, channels, reduce, format)
        if format == "json":
            body = {
                "model": lease.model.name,
                "version": lease.model.version,
                "image": {"filename": uploads[0].filename, **images[0].describe()},
                "layers": {o.name: {**o.summary(), "values": o.values} for o in selected},
                "timings_ms": milliseconds(call.timings()),
            }
            return call.respond(OrjsonResponse(body))
        return call.respond(await call.encode(_binary, lease.model, selected, format))


def _layer_names(model: ModelInfo, layers: str | None) -> list[str]:
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
) -> list[LayerOutput]:
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


def _binary(model: ModelInfo, selected: list[LayerOutput], format: str) -> Response:
    """npy/npz arrays or a PNG grid; runs on a decoder thread (rendering takes milliseconds)."""
    headers: dict[str, str] = {}
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
