"""Client-facing errors: one JSON shape, ``{"error": "...", **detail}``, never a stack trace."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error a client can fix; ``message`` says what was wrong and how to fix it."""

    # The TF Serving and KServe namespaces answer a client's 415 and 422 as 400, their own
    # convention, unless the error keeps its status in every namespace.
    keeps_status = False

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        **detail: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.detail}


def bad_request(message: str, **detail: Any) -> ApiError:
    return ApiError(400, message, **detail)


def not_found(message: str, **detail: Any) -> ApiError:
    return ApiError(404, message, **detail)


def too_large(message: str, **detail: Any) -> ApiError:
    return ApiError(413, message, **detail)


def unsupported_media(message: str, **detail: Any) -> ApiError:
    return ApiError(415, message, **detail)


def unprocessable(message: str, **detail: Any) -> ApiError:
    return ApiError(422, message, **detail)


def unavailable(message: str, retry_after: float = 1.0, **detail: Any) -> ApiError:
    seconds = str(max(1, round(retry_after)))
    return ApiError(503, message, headers={"Retry-After": seconds}, **detail)


def timed_out(message: str, **detail: Any) -> ApiError:
    return ApiError(504, message, **detail)


class BodyTooLargeError(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit:,} bytes; send a smaller "
            "image or raise CONVBRIDGE_MAX_BODY_BYTES",
            limit_bytes=limit,
        )
