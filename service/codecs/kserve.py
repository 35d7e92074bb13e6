"""KServe v2 / Open Inference Protocol: JSON tensors, the binary tensor data extension and the
classification extension, as NVIDIA's tritonclient speaks them."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from convbridge.card import ModelCard
from convbridge.signatures import (
    CLASS_INDEX,
    CLASSIFY,
    EXPLAIN,
    FEATURE_MAPS,
    HEATMAP,
    PROBABILITIES,
)
from service.codecs.scores import top_k
from service.codecs.tensors import pixels_from_values
from service.errors import bad_request

HEADER_LENGTH = "inference-header-content-length"
_DTYPES = {"UINT8": np.uint8, "FP32": np.float32}
_CLASS_DTYPES = {"INT32": np.int32, "INT64": np.int64}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0  # top-k as "score:index:label" strings when > 0


@dataclass(frozen=True)
class InferRequest:
    images: np.ndarray  # uint8 (n, height, width, channels)
    outputs: list[RequestedOutput]
    # int32 (n,): the class each heatmap explains, -1 for the top one (the optional input)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    request_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def model_metadata(card: ModelCard, versions: list[int]) -> dict[str, Any]:
    outputs = [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(card.classes)]}]
    outputs += [
        {"name": layer.name, "datatype": "FP32", "shape": [-1, *layer.shape]}
        for layer in card.layers
    ]
    inputs = [{"name": card.input.name, "datatype": "UINT8", "shape": [-1, *card.input.shape]}]
    if EXPLAIN in card.signatures:  # class_index is optional: -1 (the top class) by default
        height, width, _ = card.input.shape
        outputs.append({"name": HEATMAP, "datatype": "FP32", "shape": [-1, height, width]})
        inputs.append({"name": CLASS_INDEX, "datatype": "INT32", "shape": [-1]})
    return {
        "name": card.name,
        "versions": [str(v) for v in versions],
        "platform": "tensorflow_savedmodel",
        "inputs": inputs,
        "outputs": outputs,
    }


def split_body(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """The JSON header and the binary tensor data that follows it."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad_request(
                f"Inference-Header-Content-Length {header_length!r} must be the byte length "
                f"of the JSON header, within the body's {len(body)} bytes"
            )
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        return orjson.loads(json_part), binary
    except orjson.JSONDecodeError as error:
        raise bad_request(f"the inference request header is not valid JSON: {error}") from None


def parse_infer(document: Any, binary: bytes, card: ModelCard, max_images: int) -> InferRequest:
    """Validate an inference request against the model and decode its one input tensor."""
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise bad_request("the request must be a JSON object with an 'inputs' list")
    tensors = document["inputs"]
    names = [t.get("name") if isinstance(t, dict) else None for t in tensors]
    unknown = [name for name in names if name not in (card.input.name, CLASS_INDEX)]
    if unknown:
        raise bad_request(
            f"unknown input {unknown[0]!r}; the input is {card.input.name!r} (and, optionally, "
            f"{CLASS_INDEX!r}: the class each heatmap explains)"
        )
    if names.count(card.input.name) != 1 or names.count(CLASS_INDEX) > 1:
        raise bad_request(
            f"send exactly one input {card.input.name!r} (and at most one {CLASS_INDEX!r}); "
            f"got {names}"
        )
    # Binary tensors follow the JSON header in the order of their inputs.
    offsets, position = {}, 0
    for name, tensor in zip(names, tensors, strict=True):
        offsets[name] = position
        where = f"input {name!r}"
        position += _count(_parameters(tensor, where), "binary_data_size", where) or 0
    tensor = tensors[names.index(card.input.name)]
    images = _input_tensor(tensor, binary[offsets[card.input.name] :], card)
    if len(images) > max_images:
        raise bad_request(f"too many images: at most {max_images} per request")
    classes = np.full(len(images), -1, np.int32)
    if CLASS_INDEX in names:
        asked = tensors[names.index(CLASS_INDEX)]
        classes = _class_tensor(asked, binary[offsets[CLASS_INDEX] :], len(images), card)
    parameters = _parameters(document, "the request")
    outputs = _requested_outputs(
        document.get("outputs"), card, bool(parameters.get("binary_data_output", False))
    )
    request_id = document.get("id")
    return InferRequest(
        images, outputs, classes, str(request_id) if request_id is not None else None, parameters
    )


def _class_tensor(tensor: dict[str, Any], binary: bytes, count: int, card: ModelCard) -> np.ndarray:
    """The optional ``class_index`` input: one class per image, -1 for the top one."""
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in _CLASS_DTYPES or shape != [count]:
        raise bad_request(
            f"input {CLASS_INDEX!r} must be INT32 of shape [{count}] (one class per image, -1 "
            f"for the top one), not {datatype} {shape}"
        )
    size = _count(_parameters(tensor, f"input {CLASS_INDEX!r}"), "binary_data_size", CLASS_INDEX)
    if size is not None:
        itemsize = np.dtype(_CLASS_DTYPES[datatype]).itemsize
        if size != count * itemsize or size > len(binary):
            raise bad_request(f"{CLASS_INDEX}: binary_data_size {size} is not {count * itemsize}")
        values = np.frombuffer(binary[:size], dtype=_CLASS_DTYPES[datatype])
    else:
        data = np.asarray(tensor.get("data"), dtype=object).ravel()
        if data.size != count or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in data
        ):
            raise bad_request(f"{CLASS_INDEX}: send {count} integer(s) in 'data'")
        values = data.astype(np.int64)
    if ((values < -1) | (values >= len(card.classes))).any():
        raise bad_request(
            f"{CLASS_INDEX}: each class must be -1 (the top one) or 0 to {len(card.classes) - 1}; "
            f"got {values.tolist()}",
            valid_classes=list(card.classes),
        )
    return values.astype(np.int32)


def _input_tensor(tensor: dict[str, Any], binary: bytes, card: ModelCard) -> np.ndarray:
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype not in _DTYPES:
        raise bad_request(f"input datatype {datatype!r} is not supported; use UINT8 or FP32")
    expected = [*card.input.shape]
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1:] != expected
        or shape[0] < 1
    ):
        raise bad_request(f"input shape {shape} must be [batch, {', '.join(map(str, expected))}]")
    count = math.prod(shape)
    size = _count(_parameters(tensor, "the input"), "binary_data_size", "the input")
    if size is not None:
        itemsize = np.dtype(_DTYPES[datatype]).itemsize
        if size != count * itemsize or size > len(binary):
            raise bad_request(
                f"binary_data_size {size} does not match shape {shape} of "
                f"{datatype} ({count * itemsize} bytes; {len(binary)} sent)"
            )
        raw = np.frombuffer(binary[:size], dtype=_DTYPES[datatype])
        pixels = raw if datatype == "UINT8" else pixels_from_values(raw, "input", whole=False)
    elif "data" in tensor:
        pixels = pixels_from_values(tensor["data"], "input data", whole=datatype == "UINT8")
        if pixels.size != count:
            raise bad_request(f"input data has {pixels.size} values; shape {shape} needs {count}")
    else:
        raise bad_request("the input has neither 'data' nor parameters.binary_data_size")
    return pixels.reshape(shape)


def _parameters(holder: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = holder.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise bad_request(f"{where}: 'parameters' must be an object, not {parameters!r:.40}")
    return parameters


def _count(parameters: dict[str, Any], key: str, where: str) -> int | None:
    """A non-negative integer parameter, or None when absent."""
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"{where}: parameter {key!r} must be a non-negative integer")
    return int(value)


def _requested_outputs(spec: Any, card: ModelCard, binary_default: bool) -> list[RequestedOutput]:
    """The outputs asked for; none named: probabilities and every layer (heatmaps cost a
    gradient pass, so they come only when named)."""
    valid = [PROBABILITIES, *card.layer_names, HEATMAP]
    if spec is None:
        return [RequestedOutput(name, binary_default) for name in valid[:-1]]
    if not isinstance(spec, list) or not spec:
        raise bad_request("'outputs' must be a non-empty list of {\"name\": ...}")
    outputs = []
    for item in spec:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in valid:
            raise bad_request(f"unknown output {name!r}; outputs: {', '.join(valid)}")
        parameters = _parameters(item, f"output {name!r}")
        classification = _count(parameters, "classification", f"output {name!r}") or 0
        if classification and name != PROBABILITIES:
            raise bad_request("the classification extension applies to 'probabilities' only")
        binary = bool(parameters.get("binary_data", binary_default))
        outputs.append(RequestedOutput(name, binary, max(0, classification)))
    return outputs


def signatures_for(request: InferRequest) -> list[tuple[str, dict[str, np.ndarray] | None]]:
    """The signatures that compute the requested outputs, with their extra inputs."""
    names = {output.name for output in request.outputs}
    signatures: list[tuple[str, dict[str, np.ndarray] | None]] = []
    if PROBABILITIES in names:
        signatures.append((CLASSIFY, None))
    if names - {PROBABILITIES, HEATMAP}:
        signatures.append((FEATURE_MAPS, None))
    if HEATMAP in names:
        signatures.append((EXPLAIN, {CLASS_INDEX: request.classes}))
    return signatures


def output_tensors(
    request: InferRequest, results: dict[str, np.ndarray], card: ModelCard
) -> list[tuple[RequestedOutput, str, np.ndarray]]:
    """Each requested output as (request, datatype, values): FP32, or BYTES top-k strings."""
    tensors = []
    for output in request.outputs:
        values = results[output.name]
        if output.classification:
            datatype, values = "BYTES", _classify(values, output.classification, card.classes)
        else:
            datatype, values = "FP32", values.astype(np.float32, copy=False)
        tensors.append((output, datatype, values))
    return tensors


def raw_tensor(datatype: str, values: np.ndarray) -> bytes:
    """A tensor's bytes in the binary extension's (and gRPC raw contents') form."""
    return bytes_tensor(values) if datatype == "BYTES" else values.astype("<f4").tobytes()


def encode_response(
    request: InferRequest, results: dict[str, np.ndarray], card: ModelCard
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    tensors, chunks = [], []
    for output, datatype, values in output_tensors(request, results, card):
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype,
            "shape": list(values.shape),
        }
        if output.binary:
            raw = raw_tensor(datatype, values)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values.ravel().tolist()
        tensors.append(tensor)
    document: dict[str, Any] = {
        "model_name": card.name,
        "model_version": str(card.version),
        "outputs": tensors,
    }
    if request.request_id is not None:
        document["id"] = request.request_id
    header = orjson.dumps(document)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _classify(probabilities: np.ndarray, k: int, classes: tuple[str, ...]) -> np.ndarray:
    best = top_k(probabilities, k)
    rows = [
        [f"{row[i]:.6f}:{i}:{classes[i]}" for i in indices]
        for row, indices in zip(probabilities, best, strict=True)
    ]
    return np.array(rows, dtype=object)


def bytes_tensor(values: np.ndarray) -> bytes:
    """Triton's BYTES wire form: each element as a 4-byte little-endian length and its bytes."""
    parts = []
    for item in values.ravel():
        encoded = str(item).encode()
        parts.append(struct.pack("<I", len(encoded)) + encoded)
    return b"".join(parts)
