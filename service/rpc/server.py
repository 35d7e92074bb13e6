"""The gRPC server of a front end (or of the one process): its services, limits and token.

Every front end binds the same port (gRPC sets SO_REUSEPORT), as they do for HTTP, and the
kernel spreads connections over them. Limits: the largest message is the HTTP body limit
(``max_body_bytes``; past it, RESOURCE_EXHAUSTED before the handler runs), calls per connection
are bounded, and clients that ping too often are sent away.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from service.api.deps import AppContext
from service.rpc import kserve, tfserving
from service.rpc.health import Health

log = logging.getLogger("convbridge.grpc")
HEALTH = "/grpc.health.v1.Health/"
GRACE_S = 10.0


class BearerToken(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call but health checks needs ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = dict(details.invocation_metadata or ())
        if details.method.startswith(HEALTH) or metadata.get("authorization") == self._expected:
            return await continuation(details)
        return grpc.unary_unary_rpc_method_handler(_unauthenticated)


async def _unauthenticated(request: Any, context: grpc.aio.ServicerContext) -> Any:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED,
        "this server needs a bearer token: send the metadata 'authorization: Bearer <token>'",
    )


async def start(context: AppContext, host: str, port: int) -> grpc.aio.Server:
    """Serve gRPC on host:port until :func:`stop`."""
    settings = context.settings
    interceptors = []
    if settings.api_token is not None:
        interceptors.append(BearerToken(settings.api_token.get_secret_value()))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
            # Keep-alive enforcement: a client may ping at most every 10 s, and only while
            # it has calls open; two strikes and its connection is closed (GOAWAY).
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_permit_without_calls", 0),
        ],
    )
    for handler in (*tfserving.handlers(context), *kserve.handlers(context)):
        server.add_generic_rpc_handlers((handler,))
    health_pb2_grpc.add_HealthServicer_to_server(Health(context), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC on %s", address)
    return server


async def stop(server: grpc.aio.Server) -> None:
    """Stop taking calls; the ones under way get ``GRACE_S`` to finish."""
    await server.stop(GRACE_S)
