"""One gRPC call from its handler to its answer: deadline, errors as status codes, metrics.

Handlers raise the same ApiErrors as the REST routes; here they become gRPC status codes with
the same messages, and every call is timed by service, method and code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from service.api.deps import AppContext
from service.api.outline import TIMEOUT_HEADER, Caller
from service.errors import ApiError

log = logging.getLogger("convbridge.grpc")
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Request, Caller], Awaitable[Response]]

# The REST statuses of ApiError, as gRPC codes (the gRPC HTTP mapping, read backwards).
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(error: ApiError) -> grpc.StatusCode:
    if error.status == 422 and error.keeps_status:  # the model must be re-exported first
        return grpc.StatusCode.FAILED_PRECONDITION
    return CODES.get(error.status, grpc.StatusCode.INTERNAL)


def unary(
    context: AppContext, service: str, method: str, handler: Handler[Any, Any]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """``handler(request, caller)`` as a grpc.aio unary method.

    The caller carries the call's deadline as the REST routes' ``X-Request-Timeout-Ms``, so
    the outline honours it the same way (never longer than ``request_timeout_s``).
    """
    metric = context.metrics.grpc_duration

    async def serve(request: Any, rpc: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        headers: dict[str, str] = {}
        remaining = rpc.time_remaining()
        if remaining is not None:
            headers[TIMEOUT_HEADER] = f"{max(remaining, 0.001) * 1000.0:.3f}"
        code, message = grpc.StatusCode.OK, ""
        try:
            return await handler(request, Caller(context, headers))
        except ApiError as error:
            code, message = code_of(error), error.message
        except Exception:
            log.exception("gRPC %s/%s failed", service, method)
            code, message = grpc.StatusCode.INTERNAL, "internal error; the server log has it"
        finally:
            metric.labels(service, method, code.name).observe(time.perf_counter() - started)
        await rpc.abort(code, message)

    return serve


def unimplemented(message: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """A method answered UNIMPLEMENTED with ``message`` (its request is never parsed)."""

    async def refuse(request: Any, rpc: grpc.aio.ServicerContext) -> Any:
        await rpc.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    return refuse


def unary_handlers(
    context: AppContext, service: str, methods: dict[str, tuple[Handler[Any, Any], Any]]
) -> dict[str, grpc.RpcMethodHandler]:
    """``{method: (handler, request message class)}`` as grpc.aio method handlers."""
    return {
        name: grpc.unary_unary_rpc_method_handler(
            unary(context, service, name, function),
            request_deserializer=message.FromString,
            response_serializer=lambda response: response.SerializeToString(),
        )
        for name, (function, message) in methods.items()
    }
