"""KServe v2's gRPC API (inference.GRPCInferenceService): health, metadata and ModelInfer, with
raw and typed tensor contents and the classification extension, as tritonclient.grpc calls it.

ModelInfer turns the request into the REST body's form and goes through the same parser, so
both transports accept and refuse exactly the same tensors, with the same messages.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version as package_version
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY
from service.api.deps import AppContext, parse_version
from service.api.outline import Caller, InferenceCall, engine_errors
from service.codecs import kserve as codec
from service.errors import bad_request, not_found
from service.inference import ModelNotFoundError, State
from service.rpc import calls
from service.rpc.kserve_pb2 import (
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelReadyRequest,
    ModelReadyResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
)

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["classification"]
# Typed contents: where each datatype's values sit.
_CONTENTS = {
    "UINT8": "uint_contents",
    "FP32": "fp32_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
}


def handlers(context: AppContext) -> list[grpc.GenericRpcHandler]:
    methods: dict[str, tuple[calls.Handler[Any, Any], Any]] = {
        "ServerLive": (_live, ServerLiveRequest),
        "ServerReady": (_ready, ServerReadyRequest),
        "ModelReady": (_model_ready, ModelReadyRequest),
        "ServerMetadata": (_server_metadata, ServerMetadataRequest),
        "ModelMetadata": (_model_metadata, ModelMetadataRequest),
        "ModelInfer": (_infer, ModelInferRequest),
    }
    return [
        grpc.method_handlers_generic_handler(
            SERVICE, calls.unary_handlers(context, SERVICE, methods)
        )
    ]


async def _live(request: ServerLiveRequest, caller: Caller) -> ServerLiveResponse:
    return ServerLiveResponse(live=True)


async def _ready(request: ServerReadyRequest, caller: Caller) -> ServerReadyResponse:
    return ServerReadyResponse(ready=caller.context.engine.readiness().ready)


async def _server_metadata(
    request: ServerMetadataRequest, caller: Caller
) -> ServerMetadataResponse:
    return ServerMetadataResponse(
        name="convbridge", version=package_version("convbridge"), extensions=EXTENSIONS
    )


async def _model_ready(request: ModelReadyRequest, caller: Caller) -> ModelReadyResponse:
    """Ready or not, as tritonclient's is_model_ready reads it; NOT_FOUND for no such model."""
    engine = caller.context.engine
    with engine_errors(request.name):
        try:
            model = engine.status(request.name)
        except ModelNotFoundError:
            raise not_found(f"model {request.name!r} not found") from None
    wanted = parse_version(request.version or None)
    chosen = wanted if wanted is not None else model.served_version
    entry = model.version(chosen) if chosen is not None else None
    return ModelReadyResponse(ready=entry is not None and entry.state is State.READY)


async def _model_metadata(request: ModelMetadataRequest, caller: Caller) -> ModelMetadataResponse:
    engine = caller.context.engine
    with engine_errors(request.name):
        model = await engine.model(request.name, parse_version(request.version or None))
        versions = engine.status(request.name).ready_versions
    response = ModelMetadataResponse()
    json_format.ParseDict(codec.model_metadata(model.card, versions), response)
    return response


async def _infer(request: ModelInferRequest, caller: Caller) -> ModelInferResponse:
    wanted = parse_version(request.model_version or None)
    async with InferenceCall(caller, request.model_name, "grpc_infer", protocol=True) as call:
        lease = await call.reserve(wanted, CLASSIFY)
        limit = call.context.settings.max_images_per_request
        parsed = await call.parse(_parse, request, lease.model.card, limit)
        runs = await asyncio.gather(
            *(
                call.run(parsed.images, signature, extra)
                for signature, extra in codec.signatures_for(parsed)
            )
        )
        outputs = {name: value for run in runs for name, value in run.outputs.items()}
        model = lease.model
        response = await call.encode(_response, parsed, outputs, model.card)
        response.model_name, response.model_version = model.name, str(model.version)
        call.finish()
        return response


def _parse(request: ModelInferRequest, card: ModelCard, limit: int) -> codec.InferRequest:
    """The request in the REST body's form (JSON document and binary tensor data), parsed by
    the REST codec: raw_input_contents become binary data, typed contents become ``data``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: send "
            "all inputs raw or none"
        )
    inputs: list[dict[str, Any]] = []
    for index, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
            "parameters": _parameters(tensor.parameters),
        }
        if raw:
            entry["parameters"]["binary_data_size"] = len(raw[index])
        elif tensor.datatype in _CONTENTS:
            values = getattr(tensor.contents, _CONTENTS[tensor.datatype])
            entry["data"] = (
                list(values) if tensor.datatype.startswith("INT") else np.asarray(values)
            )
        inputs.append(entry)
    document: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(request.parameters)}
    if request.outputs:
        document["outputs"] = [
            {"name": output.name, "parameters": _parameters(output.parameters)}
            for output in request.outputs
        ]
    if request.id:
        document["id"] = request.id
    return codec.parse_infer(document, b"".join(raw), card, limit)


def _parameters(parameters: Any) -> dict[str, Any]:
    values = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, kind) if kind else None
    return values


def _response(
    request: codec.InferRequest, results: dict[str, np.ndarray], card: ModelCard
) -> ModelInferResponse:
    response = ModelInferResponse()
    if request.request_id is not None:
        response.id = request.request_id
    for output, datatype, values in codec.output_tensors(request, results, card):
        response.outputs.add(name=output.name, datatype=datatype, shape=list(values.shape))
        response.raw_output_contents.append(codec.raw_tensor(datatype, values))
    return response
