"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from service.deps import State
from service.responses import OrjsonResponse
from service.schemas import Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Alive: the process answers HTTP")
async def healthz() -> OrjsonResponse:
    return OrjsonResponse({"status": "alive"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready yet; see Retry-After"}},
    summary="Ready: every model loaded and warmed up",
)
async def readyz(state: State) -> OrjsonResponse:
    if state.repository is None:
        body = {"ready": False, "models": {}, "error": state.startup_error or "starting"}
        return OrjsonResponse(body, status_code=503, headers={"Retry-After": "2"})
    ready, models = state.repository.readiness()
    body = {"ready": ready, "models": models, "error": None}
    if not ready:
        return OrjsonResponse(body, status_code=503, headers={"Retry-After": "2"})
    return OrjsonResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus text exposition",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
