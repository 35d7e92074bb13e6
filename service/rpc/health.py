"""grpc.health.v1.Health, tied to readiness as /readyz is: SERVING once every model is loaded
and warm (and the executor is reachable), NOT_SERVING until then or while it is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.deps import AppContext
from service.rpc.kserve import SERVICE as KSERVE
from service.rpc.tfserving import MODELS, PREDICTION

SERVICES = ("", PREDICTION, MODELS, KSERVE)  # "": the server as a whole
WATCH_INTERVAL_S = 0.5


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, context: AppContext) -> None:
        self._context = context

    def _status(self, service: str) -> int:
        if service not in SERVICES:
            return -1
        ready = self._context.engine.readiness().ready
        response = health_pb2.HealthCheckResponse
        return int(response.SERVING if ready else response.NOT_SERVING)

    async def Check(  # noqa: N802 (the protocol's name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status < 0:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown service {request.service!r}; known: {', '.join(SERVICES[1:])}",
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802 (the protocol's name)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change, until the client goes."""
        last = None
        while True:
            status = self._status(request.service)
            if status < 0:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(WATCH_INTERVAL_S)
