"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.api.deps import app_context
from service.api.schemas import Readiness
from service.web.responses import OrjsonResponse

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
async def readyz(request: Request) -> OrjsonResponse:
    readiness = app_context(request).engine.readiness()
    body = {"ready": readiness.ready, "models": readiness.models, "error": readiness.error}
    if not readiness.ready:
        return OrjsonResponse(body, status_code=503, headers={"Retry-After": "2"})
    return OrjsonResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus text exposition",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    context = app_context(request)
    # Front ends count HTTP requests; the executor (when there is one) counts batches and models.
    body = context.metrics.exposition() + await context.engine.metrics_text()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
