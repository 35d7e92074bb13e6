"""POST /models/{name}/explain: where the model looked (Grad-CAM) when it scored a class."""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from convbridge.signatures import CLASS_INDEX, EXPLAIN, HEATMAP, SCORE
from service.api.deps import ModelName, Version
from service.api.openapi import ERRORS, IMAGE_REQUEST
from service.api.outline import InferenceCall
from service.api.schemas import ExplainResponse
from service.api.uploads import read_one_upload
from service.codecs import explanations
from service.errors import unprocessable
from service.inference import ModelInfo
from service.web.responses import OrjsonResponse, milliseconds

router = APIRouter(tags=["native"])
# What a binary (png, npy) answer says about itself; CORS exposes them to browsers.
EXPLAIN_HEADERS = ("X-Class-Index", "X-Class-Label", "X-Class-Score", "X-Explain-Layer")
_MEDIA = {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
}


@router.post(
    "/models/{name}/explain",
    response_model=ExplainResponse,
    responses={**ERRORS, 200: {"content": _MEDIA, "description": "png, json or npy"}},
    openapi_extra=IMAGE_REQUEST,
    summary="Where the model looked for a class in one image (Grad-CAM)",
)
async def explain(
    request: Request,
    name: ModelName,
    version: Version = None,
    class_: str | None = Query(
        None,
        alias="class",
        description="the class to explain, by label or index; default: the model's top class",
        examples=["7"],
    ),
    format: Literal["png", "json", "npy"] = Query(
        "png",
        description="png: the heatmap over the image beside the heatmap alone; json: the "
        "heatmap as nested lists; npy: the float32 heatmap array",
    ),
    alpha: float = Query(0.5, ge=0, le=1, description="the heatmap's opacity in the png overlay"),
) -> Response:
    """Send one image; get a heatmap at the model's input size, 0..1, for the class asked.

    The heatmap is Grad-CAM on the class's pre-softmax logit at the last spatial layer before
    the bridge (the model card's `explain_layer`); for a GlobalAveragePooling2D bridge into one
    Dense layer it equals the class activation map (CAM).
    """
    async with InferenceCall(request, name, "explain") as call:
        lease = await call.reserve(version, EXPLAIN)
        index = _class_index(lease.model, class_)
        limit = call.context.settings.max_images_per_request
        uploads = await read_one_upload(request, limit, "explain")
        images = await call.decode(uploads)
        pixels = images[0].pixels
        result = await call.run(pixels[None], extra={CLASS_INDEX: np.array([index], np.int32)})
        model = lease.model
        heatmap = result.outputs[HEATMAP][0]
        chosen, score = int(result.outputs[CLASS_INDEX][0]), float(result.outputs[SCORE][0])
        label = model.card.classes[chosen]
        values = (
            str(chosen),
            label.encode("ascii", "backslashreplace").decode(),  # a header is latin-1
            f"{score:.6g}",
            model.card.explain_layer or "",
        )
        headers = dict(zip(EXPLAIN_HEADERS, values, strict=True))
        if format == "json":
            body = {
                "model": model.name,
                "version": model.version,
                "layer": model.card.explain_layer,
                "image": {"filename": uploads[0].filename, **images[0].describe()},
                **explanations.explanation(heatmap, chosen, score, model.card.classes),
                "timings_ms": milliseconds(call.timings()),
            }
            return call.respond(OrjsonResponse(body, headers=headers))
        stem = f"{model.name}-v{model.version}-explain-{chosen}"
        if format == "npy":
            body_bytes, media = explanations.encode_npy(heatmap), "application/x-npy"
        else:
            title = f"{model.name} v{model.version}  class {label} ({chosen})  score {score:.3f}"
            body_bytes = await call.encode(explanations.render_png, pixels, heatmap, alpha, title)
            media = "image/png"
        headers["Content-Disposition"] = f'inline; filename="{stem}.{format}"'
        return call.respond(Response(body_bytes, media_type=media, headers=headers))


def _class_index(model: ModelInfo, asked: str | None) -> int:
    try:
        return explanations.class_index(asked, model.card.classes)
    except explanations.ClassError as error:
        raise unprocessable(str(error), valid_classes=error.valid) from None
