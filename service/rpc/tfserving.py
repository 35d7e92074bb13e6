"""TF Serving's gRPC API: PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), on the same outline, batchers and errors as the REST routes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from convbridge.card import ModelCard
from convbridge.signatures import CLASS_INDEX, CLASSIFY, EXPLAIN, FEATURE_MAPS
from service.api.deps import AppContext
from service.api.outline import Caller, InferenceCall, engine_errors
from service.api.tfserving import servable_versions
from service.codecs import tfserving as codec
from service.errors import bad_request, not_found
from service.inference.signatures import extra_inputs
from service.rpc import calls
from service.rpc.tfserving_pb2 import (
    DataType,
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelSpec,
    ModelVersionStatus,
    PredictRequest,
    PredictResponse,
    SignatureDefMap,
    TensorProto,
)

PREDICTION = "tensorflow.serving.PredictionService"
MODELS = "tensorflow.serving.ModelService"
SIGNATURE_DEF_MAP = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
SIGNATURES = (CLASSIFY, FEATURE_MAPS, EXPLAIN)
# Where each dtype's values sit in a TensorProto when tensor_content is empty.
_DTYPES: dict[int, tuple[type[np.generic], str]] = {
    DataType.DT_UINT8: (np.uint8, "int_val"),
    DataType.DT_INT32: (np.int32, "int_val"),
    DataType.DT_INT64: (np.int64, "int64_val"),
    DataType.DT_FLOAT: (np.float32, "float_val"),
    DataType.DT_DOUBLE: (np.float64, "double_val"),
}
_PROTO_DTYPES = {np.dtype(np.float32): DataType.DT_FLOAT, np.dtype(np.int32): DataType.DT_INT32}
_UNIMPLEMENTED = (
    "convbridge serves image models: {method} takes tf.Example inputs, which they do not read; "
    "call Predict with a uint8 'images' tensor instead"
)


def handlers(context: AppContext) -> list[grpc.GenericRpcHandler]:
    """The generic handlers of both services, to add to a grpc.aio server."""
    prediction: dict[str, tuple[calls.Handler[Any, Any], Any]] = {
        "Predict": (_predict, PredictRequest),
        "GetModelMetadata": (_metadata, GetModelMetadataRequest),
    }
    methods = calls.unary_handlers(context, PREDICTION, prediction)
    for name in ("Classify", "Regress", "MultiInference"):
        methods[name] = grpc.unary_unary_rpc_method_handler(
            calls.unimplemented(_UNIMPLEMENTED.format(method=name))
        )
    model_methods = calls.unary_handlers(
        context, MODELS, {"GetModelStatus": (_status, GetModelStatusRequest)}
    )
    reload = grpc.unary_unary_rpc_method_handler(
        calls.unimplemented(
            "convbridge reloads from its repository by itself (CONVBRIDGE_POLL_INTERVAL_S): "
            "copy a new version folder in instead"
        )
    )
    return [
        grpc.method_handlers_generic_handler(PREDICTION, methods),
        grpc.method_handlers_generic_handler(
            MODELS, {**model_methods, "HandleReloadConfigRequest": reload}
        ),
    ]


@dataclass(frozen=True)
class _Inputs:
    images: np.ndarray
    extra: dict[str, np.ndarray]


async def _predict(request: PredictRequest, caller: Caller) -> PredictResponse:
    spec = request.model_spec
    signature = spec.signature_name or CLASSIFY
    if signature not in SIGNATURES:
        raise bad_request(
            f'Serving signature name: "{signature}" not found in signature def; valid: '
            f"{', '.join(SIGNATURES)}"
        )
    async with InferenceCall(caller, spec.name, "grpc_predict", protocol=True) as call:
        lease = await call.reserve(_version(spec), signature)
        card = lease.model.card
        limit = call.context.settings.max_images_per_request
        inputs = await call.parse(_inputs, request, card, signature, limit)
        result = await call.run(inputs.images, signature, inputs.extra)
        wanted = list(request.output_filter) or list(result.outputs)
        unknown = [name for name in wanted if name not in result.outputs]
        if unknown:
            raise bad_request(
                f"output tensor alias not found in signature: {', '.join(unknown)}; outputs "
                f"expected to be in the set {{{', '.join(result.outputs)}}}"
            )
        response = await call.encode(_response, result.outputs, wanted)
        _model_spec(response.model_spec, lease.model.name, lease.model.version, signature)
        call.finish()
        return response


def _inputs(request: PredictRequest, card: ModelCard, signature: str, limit: int) -> _Inputs:
    """The images (and explain's class_index) of a Predict request, checked as TF Serving
    checks them: the signature's input names, dtypes and shapes."""
    extra_types = extra_inputs(signature)
    names = set(request.inputs)
    expected = {card.input.name, *extra_types}
    if card.input.name not in names or not names <= expected:
        raise bad_request(
            f"input size does not match signature: got {sorted(names)}, the signature "
            f"{signature!r} takes {sorted(expected)}"
            + (f" ({', '.join(extra_types)} optional)" if extra_types else "")
        )
    images = tensor_array(request.inputs[card.input.name], card.input.name, np.uint8)
    wanted = (card.input.shape[0], card.input.shape[1], card.input.shape[2])
    if images.ndim != 4 or images.shape[1:] != wanted or len(images) < 1:
        raise bad_request(
            f"input {card.input.name!r} has shape {list(images.shape)}; the model takes "
            f"[batch, {', '.join(map(str, wanted))}]"
        )
    if len(images) > limit:
        raise bad_request(f"too many images: at most {limit} per request")
    extra = {}
    for name, dtype in extra_types.items():
        if name in names:
            values = tensor_array(request.inputs[name], name, np.dtype(dtype).type)
        else:  # class_index left out: the top class of each image
            values = np.full(len(images), -1, dtype)
        if values.shape != (len(images),):
            raise bad_request(f"input {name!r} needs one value per image: shape [{len(images)}]")
        if name == CLASS_INDEX and ((values < -1) | (values >= len(card.classes))).any():
            raise bad_request(
                f"{CLASS_INDEX} values must be -1 (the top class) or 0 to "
                f"{len(card.classes) - 1}; got {values.tolist()}",
                valid_classes=list(card.classes),
            )
        extra[name] = values
    return _Inputs(images, extra)


def tensor_array(tensor: TensorProto, name: str, dtype: type[np.generic]) -> np.ndarray:
    """A TensorProto as a numpy array of ``dtype``, which must be the tensor's own dtype."""
    wanted = next(key for key, (kind, _) in _DTYPES.items() if kind is dtype)
    if tensor.dtype != wanted:
        raise bad_request(
            f"input {name!r} must be {DataType.Name(wanted)}, not "
            f"{DataType.Name(tensor.dtype) if tensor.dtype in DataType.values() else tensor.dtype}"
        )
    if tensor.tensor_shape.unknown_rank:
        raise bad_request(f"input {name!r} must have a known shape")
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise bad_request(f"input {name!r} has a negative dimension: {shape}")
    count = math.prod(shape)
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count * np.dtype(dtype).itemsize:
            raise bad_request(
                f"input {name!r}: tensor_content holds {len(tensor.tensor_content)} bytes; "
                f"shape {shape} of {np.dtype(dtype).name} needs {count * np.dtype(dtype).itemsize}"
            )
        values = np.frombuffer(tensor.tensor_content, np.dtype(dtype).newbyteorder("<"))
    else:
        field = _DTYPES[wanted][1]
        listed = np.asarray(getattr(tensor, field))
        if dtype is np.uint8 and listed.size and (listed.min() < 0 or listed.max() > 255):
            raise bad_request(f"input {name!r}: uint8 values must lie in 0..255")
        if listed.size == 1 and count > 1:  # TF fills the tensor with a single value
            listed = np.full(count, listed[0])
        if listed.size != count:
            raise bad_request(
                f"input {name!r} has {listed.size} values; shape {shape} needs {count}"
            )
        values = listed.astype(dtype)
    return values.astype(dtype, copy=False).reshape(shape)


def _response(outputs: dict[str, np.ndarray], wanted: list[str]) -> PredictResponse:
    response = PredictResponse()
    for name in wanted:
        value = np.ascontiguousarray(outputs[name])
        tensor = response.outputs[name]
        tensor.dtype = _PROTO_DTYPES[value.dtype]
        for size in value.shape:
            tensor.tensor_shape.dim.add().size = size
        tensor.tensor_content = value.astype(value.dtype.newbyteorder("<")).tobytes()
    return response


async def _metadata(request: GetModelMetadataRequest, caller: Caller) -> GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
        raise bad_request(
            "GetModelMetadataRequest must ask for metadata_field ['signature_def'], the one "
            f"convbridge serves; got {fields}"
        )
    spec = request.model_spec
    with engine_errors(spec.name):
        model = await caller.context.engine.model(spec.name, _version(spec))
    signatures = SignatureDefMap()
    described = codec.metadata(model.card)["metadata"]["signature_def"]
    json_format.ParseDict(described, signatures, ignore_unknown_fields=True)
    response = GetModelMetadataResponse()
    _model_spec(response.model_spec, model.name, model.version, "")
    packed = response.metadata["signature_def"]
    packed.type_url, packed.value = SIGNATURE_DEF_MAP, signatures.SerializeToString()
    return response


async def _status(request: GetModelStatusRequest, caller: Caller) -> GetModelStatusResponse:
    spec = request.model_spec
    response = GetModelStatusResponse()
    for entry in servable_versions(caller.context.engine, spec.name, _version(spec)):
        status = response.model_version_status.add()
        status.version = entry.version
        state = codec.STATES.get(entry.state.value, "UNKNOWN")
        status.state = ModelVersionStatus.State.Value(state)
        status.status.error_code = 2 if entry.error else 0  # tensorflow.error.Code UNKNOWN / OK
        status.status.error_message = entry.error or ""
    return response


def _version(spec: ModelSpec) -> int | None:
    if spec.HasField("version_label"):
        raise not_found(
            f"version labels are not supported (asked for {spec.version_label!r}); address a "
            "version by number in model_spec.version"
        )
    if spec.HasField("version"):
        if spec.version.value < 1:
            raise bad_request(f"model_spec.version {spec.version.value} must be positive")
        return int(spec.version.value)
    return None


def _model_spec(spec: ModelSpec, name: str, version: int, signature: str) -> None:
    spec.name = name
    spec.version.value = version
    spec.signature_name = signature
