"""POST /models/{name}/classify: labelled top-k scores for one or more images."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request

from service.api.pipeline import RequestScope, find_model, infer, record, stage_timings
from service.api.uploads import read_uploads
from service.deps import ModelName, Version, app_repository, app_state
from service.openapi import ERRORS, IMAGE_REQUEST
from service.responses import OrjsonResponse, milliseconds, server_timing
from service.schemas import ClassifyResponse

router = APIRouter(tags=["native"])


@router.post(
    "/models/{name}/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=IMAGE_REQUEST,
    summary="Classify one or more images",
)
async def classify(
    request: Request,
    name: ModelName,
    version: Version = None,
    top_k: int = Query(5, ge=1, le=1000, description="scores per image, best first"),
) -> OrjsonResponse:
    """Send a raw image body (`Content-Type: image/png`...) or multipart `images` files."""
    # The hot path: state comes off the request rather than through Depends (measurably cheaper).
    state, repository = app_state(request), app_repository(request)
    async with RequestScope(request, name, "classify") as scope:
        model = scope.hold(await find_model(repository, name, version))
        scope.admit(model, "serving_default")
        uploads = await read_uploads(request, state.settings.max_images_per_request)
        result = await infer(scope, model, "serving_default", uploads)
        started = time.perf_counter()
        probabilities = result.outputs["probabilities"]
        k = min(top_k, probabilities.shape[1])
        classes = model.card.classes
        predictions: list[dict[str, Any]] = []
        for row, image, upload in zip(probabilities, result.images, uploads, strict=True):
            best = np.argsort(-row, kind="stable")[:k]
            predictions.append(
                {
                    "top_k": [
                        {"label": classes[i], "index": int(i), "score": float(row[i])} for i in best
                    ],
                    "image": {"filename": upload.filename, **image.describe()},
                }
            )
        timings = stage_timings(result.decode_seconds, result.stats, started)
        body = {
            "model": model.name,
            "version": model.version,
            "device": model.device,
            "predictions": predictions,
            "timings_ms": milliseconds(timings),
        }
        record(state, model, timings)
        return OrjsonResponse(
            body,
            headers={
                "Server-Timing": server_timing(timings),
                "X-Model-Version": str(model.version),
            },
        )
