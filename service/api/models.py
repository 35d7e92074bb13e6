"""GET /models and GET /models/{name}: everything a client needs to build a request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.pipeline import find_model
from service.deps import ModelName, Repository, Version
from service.errors import not_found
from service.openapi import ERRORS
from service.repository import ModelRepository, VersionEntry
from service.responses import OrjsonResponse
from service.schemas import ModelDetail, ModelList

router = APIRouter(tags=["native"])


@router.get("/models", response_model=ModelList, summary="Every model, its versions and state")
async def list_models(repository: Repository) -> OrjsonResponse:
    return OrjsonResponse(
        {"models": [summary(repository, name) for name in sorted(repository.entries)]}
    )


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    responses=ERRORS,
    summary="The model card of the served version",
)
async def get_model(
    name: ModelName, repository: Repository, version: Version = None
) -> OrjsonResponse:
    if name not in repository.entries:
        await find_model(repository, name, version)  # raises the 404 that lists the models
    entry = _entry(repository, name, version)
    body = summary(repository, name, entry)
    body["card"] = entry.card.to_dict() if entry.card else None
    return OrjsonResponse(body)


def _entry(repository: ModelRepository, name: str, version: int | None) -> VersionEntry:
    versions = repository.entries[name]
    if version is None:
        version = repository.served_version(name) or (max(versions) if versions else None)
    if version is None or version not in versions:
        raise not_found(f"model {name!r} has no version {version}; versions: {sorted(versions)}")
    entry = versions[version]
    if entry.card is None:
        _read_card_quietly(entry)
    return entry


def _read_card_quietly(entry: VersionEntry) -> None:
    from convbridge.card import CardError, read_card

    try:
        entry.card = read_card(entry.path)
    except CardError:
        entry.card = None


def summary(
    repository: ModelRepository, name: str, entry: VersionEntry | None = None
) -> dict[str, Any]:
    """A model's versions and states, plus the facts of one version's card."""
    versions = repository.entries[name]
    served = repository.served_version(name)
    if entry is None and versions:
        entry = versions[served] if served is not None else versions[max(versions)]
    body: dict[str, Any] = {
        "name": name,
        "served_version": served,
        "versions": [
            {"version": v, "state": e.state.value, "error": e.error, "load_seconds": e.load_seconds}
            for v, e in sorted(versions.items())
        ],
        "device": repository.runtime.device if served is not None else None,
        "endpoints": {
            "classify": f"/models/{name}/classify",
            "feature_maps": f"/models/{name}/feature-maps",
        },
    }
    card = entry.card if entry is not None else None
    if card is not None:
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
