"""GET /models and GET /models/{name}: everything a client needs to build a request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from convbridge.signatures import EXPLAIN
from service.api.deps import ModelName, Version, app_context
from service.api.openapi import ERRORS, STARTING_ERRORS
from service.api.outline import engine_errors
from service.api.schemas import ModelDetail, ModelList
from service.inference import ModelStatus, VersionStatus
from service.inference.errors import unknown_version
from service.web.responses import OrjsonResponse

router = APIRouter(tags=["native"])


@router.get(
    "/models",
    response_model=ModelList,
    responses=STARTING_ERRORS,
    summary="Every model, its versions and state",
)
async def list_models(request: Request) -> OrjsonResponse:
    engine = app_context(request).engine
    with engine_errors(""):
        models = [engine.status(name) for name in engine.names()]
    return OrjsonResponse({"models": [summary(model) for model in models]})


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    responses=ERRORS,
    summary="The model card of the served version",
)
async def get_model(request: Request, name: ModelName, version: Version = None) -> OrjsonResponse:
    engine = app_context(request).engine
    with engine_errors(name):
        model = engine.status(name)
        newest = model.versions[-1].version if model.versions else None
        shown = version or model.served_version or newest
        if shown is None or model.version(shown) is None:
            raise unknown_version(name, shown, [v.version for v in model.versions])
        engine.read_card(name, shown)  # from disk when the version is not loaded
        model = engine.status(name)
    entry = model.version(shown)
    body = summary(model, entry)
    body["card"] = entry.card.to_dict() if entry and entry.card else None
    return OrjsonResponse(body)


def summary(model: ModelStatus, shown: VersionStatus | None = None) -> dict[str, Any]:
    """A model's versions and states, plus the card facts of one version (default: served)."""
    if shown is None and model.versions:
        served = model.served_version
        shown = model.version(served) if served is not None else model.versions[-1]
    card = shown.card if shown is not None else None
    body: dict[str, Any] = {
        "name": model.name,
        "served_version": model.served_version,
        "versions": [
            {
                "version": v.version,
                "state": v.state.value,
                "error": v.error,
                "load_seconds": v.load_seconds,
            }
            for v in model.versions
        ],
        "device": model.device,
        "endpoints": {
            "classify": f"/models/{model.name}/classify",
            "feature_maps": f"/models/{model.name}/feature-maps",
        },
    }
    if card is not None:
        if EXPLAIN in card.signatures:
            body["endpoints"]["explain"] = f"/models/{model.name}/explain"
        body.update(
            variant=card.variant,
            bridge=card.bridge,
            input={
                "shape": list(card.input.shape),
                "dtype": card.input.dtype,
                "channels": card.input.channels,
            },
            classes=list(card.classes),
            layers=[{"name": x.name, "shape": list(x.shape), "kind": x.kind} for x in card.layers],
            accuracy=card.evaluation.accuracy,
            parameters=card.parameters,
        )
    return body
