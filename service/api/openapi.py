"""OpenAPI fragments shared by the routes: image request bodies and error responses."""

from __future__ import annotations

from typing import Any

from convbridge.signatures import PROBABILITIES, SIGNATURES
from service.api.outline import TIMEOUT_HEADER
from service.api.schemas import ErrorBody
from service.codecs.images import MEDIA_TYPES

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

# Routes that look a model up: 503 while the service starts or its executor restarts, and
# (those that ask the executor) 504 when it does not answer within request_timeout_s.
STARTING_ERRORS: dict[int | str, dict[str, Any]] = {503: ERRORS[503]}
LOOKUP_ERRORS: dict[int | str, dict[str, Any]] = {503: ERRORS[503], 504: ERRORS[504]}

# TF Serving and KServe say 400 (invalid argument) where the native API says 415 or 422.
PROTOCOL_ERRORS: dict[int | str, dict[str, Any]] = {
    status: ERRORS[status] for status in (400, 404, 413, 503, 504)
}

TIMEOUT_PARAMETER: dict[str, Any] = {
    "name": TIMEOUT_HEADER,
    "in": "header",
    "required": False,
    "description": "shorten this request's deadline (milliseconds); it never exceeds the "
    "server's request_timeout_s. 504 when it passes.",
    "schema": {"type": "number", "exclusiveMinimum": 0, "examples": [250]},
}

IMAGE_REQUEST: dict[str, Any] = {**IMAGE_BODY, "parameters": [TIMEOUT_PARAMETER]}

_PARAMETERS = {"type": "object", "additionalProperties": True}

TFSERVING_PREDICT: dict[str, Any] = {
    "parameters": [TIMEOUT_PARAMETER],
    "requestBody": {
        "required": True,
        "description": "Row format (`instances`) or columnar format (`inputs`). An image is a "
        'nested list of pixel values (height x width [x channels]) or `{"b64": <image file>}`.',
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "signature_name": {
                            "type": "string",
                            "enum": list(SIGNATURES),
                        },
                        "instances": {"type": "array"},
                        "inputs": {},
                    },
                },
                "example": {"instances": [{"b64": "<base64 PNG>"}]},
            }
        },
    },
    "responses": {
        "200": {
            "description": "`predictions` (row format) or `outputs` (columnar format)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"predictions": {}, "outputs": {}},
                    }
                }
            },
        }
    },
}

TFSERVING_EXPLAIN: dict[str, Any] = {
    "parameters": [TIMEOUT_PARAMETER],
    "requestBody": {
        "required": True,
        "description": "`instances` as `:predict` takes them; the class of each (an index or a "
        'label) as `{"images": ..., "class_index": 7}`, or for all in a top-level '
        "`class_index` (one, or a list with one per instance); default: the top class.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {"type": "array"},
                        "class_index": {},
                    },
                },
                "example": {"instances": [{"b64": "<base64 PNG>"}], "class_index": 7},
            }
        },
    },
    "responses": {
        "200": {
            "description": "one explanation per instance: the class, its label and score, and "
            "the Grad-CAM heatmap (height x width, 0..1)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "explanations": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "class_index": {"type": "integer"},
                                        "label": {"type": "string"},
                                        "score": {"type": "number"},
                                        "heatmap": {"type": "array"},
                                    },
                                },
                            }
                        },
                    }
                }
            },
        }
    },
}

_KSERVE_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "examples": ["images"]},
        "shape": {"type": "array", "items": {"type": "integer"}, "examples": [[1, 28, 28, 1]]},
        "datatype": {"type": "string", "examples": ["UINT8"]},
        "parameters": _PARAMETERS,
        "data": {"description": "flat or nested values, row-major"},
    },
}

KSERVE_INFER: dict[str, Any] = {
    "parameters": [TIMEOUT_PARAMETER],
    "requestBody": {
        "required": True,
        "description": "An inference request: JSON, or with the binary tensor data extension "
        "a JSON header of `Inference-Header-Content-Length` bytes followed by raw tensors.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": _PARAMETERS,
                        "inputs": {"type": "array", "items": _KSERVE_TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "examples": [PROBABILITIES]},
                                    "parameters": _PARAMETERS,
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": _BINARY,
        },
    },
    "responses": {
        "200": {
            "description": "An inference response (JSON, or JSON header + binary tensors)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["model_name", "outputs"],
                        "properties": {
                            "model_name": {"type": "string"},
                            "model_version": {"type": "string"},
                            "id": {"type": "string"},
                            "parameters": _PARAMETERS,
                            "outputs": {"type": "array", "items": _KSERVE_TENSOR},
                        },
                    }
                },
                "application/octet-stream": _BINARY,
            },
        }
    },
}
