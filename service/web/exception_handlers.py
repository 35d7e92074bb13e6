"""Exception handlers: every error leaves as {"error": ...}, never as a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.errors import ApiError
from service.web.responses import OrjsonResponse

log = logging.getLogger("convbridge.errors")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)


async def api_error(request: Request, error: ApiError) -> OrjsonResponse:
    if error.status >= 500 and error.status not in (503, 504):
        log.error("%s %s: %s", request.method, request.url.path, error.message)
    return OrjsonResponse(error.body(), status_code=error.status, headers=error.headers)


async def _validation_error(request: Request, error: RequestValidationError) -> OrjsonResponse:
    problems = []
    for item in error.errors():
        where = item["loc"][0] if item["loc"] else "request"
        name = ".".join(str(part) for part in item["loc"][1:]) or where
        problems.append(f"{where} parameter {name!r}: {item['msg']}")
    body = {
        "error": "; ".join(problems),
        "detail": [
            {
                "location": item["loc"][0] if item["loc"] else None,
                "name": ".".join(str(p) for p in item["loc"][1:]),
                "message": item["msg"],
            }
            for item in error.errors()
        ],
    }
    return OrjsonResponse(body, status_code=422)


async def _http_error(request: Request, error: HTTPException) -> OrjsonResponse:
    messages = {
        404: f"no route {request.url.path}; see /docs for the API",
        405: f"{request.method} is not allowed on {request.url.path}; see /docs",
    }
    message = messages.get(error.status_code, str(error.detail))
    return OrjsonResponse(
        {"error": message}, status_code=error.status_code, headers=getattr(error, "headers", None)
    )


async def unexpected_error(request: Request, error: Exception) -> OrjsonResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return OrjsonResponse(
        {"error": "internal error; the server log has the details"}, status_code=500
    )
