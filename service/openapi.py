"""OpenAPI fragments shared by the routes: image request bodies and error responses."""

from __future__ import annotations

from typing import Any

from service.imaging import MEDIA_TYPES
from service.schemas import ErrorBody

_BINARY = {"schema": {"type": "string", "format": "binary"}}

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A raw image body, or multipart/form-data with one or more `images` files.",
        "content": {
            **{media: _BINARY for media in MEDIA_TYPES},
            "application/octet-stream": _BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
        },
    }
}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request (empty body, bad multipart)"},
    404: {"model": ErrorBody, "description": "Unknown model or version"},
    413: {"model": ErrorBody, "description": "Body, image or image count over the limit"},
    415: {"model": ErrorBody, "description": "Content type or image format not supported"},
    422: {"model": ErrorBody, "description": "Invalid parameter, layer or undecodable image"},
    503: {"model": ErrorBody, "description": "Overloaded or not ready; see Retry-After"},
    504: {"model": ErrorBody, "description": "The request's deadline passed"},
}
