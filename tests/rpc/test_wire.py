"""convbridge's own protobuf messages against the ones clients are built from.

The front ends read TF Serving's and KServe v2's messages with modules generated from
service/rpc/protos/, not from tensorflow-serving-api (which imports TensorFlow) nor from
tritonclient. On the wire only field numbers and types count: every field convbridge declares
must match the clients' own descriptors, and each message must round-trip through them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from service.rpc import kserve_pb2, tfserving_pb2


def _pairs():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_pb2,
        predict_pb2,
        status_pb2,
    )
    from tritonclient.grpc import service_pb2

    ours = [
        (tfserving_pb2.TensorProto, tensor_pb2.TensorProto),
        (tfserving_pb2.TensorShapeProto, tensor_shape_pb2.TensorShapeProto),
        (tfserving_pb2.TensorInfo, meta_graph_pb2.TensorInfo),
        (tfserving_pb2.SignatureDef, meta_graph_pb2.SignatureDef),
        (tfserving_pb2.ModelSpec, model_pb2.ModelSpec),
        (tfserving_pb2.PredictRequest, predict_pb2.PredictRequest),
        (tfserving_pb2.PredictResponse, predict_pb2.PredictResponse),
        (tfserving_pb2.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
        (tfserving_pb2.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
        (tfserving_pb2.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
        (tfserving_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusRequest),
        (tfserving_pb2.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse),
        (tfserving_pb2.ModelVersionStatus, get_model_status_pb2.ModelVersionStatus),
        (tfserving_pb2.StatusProto, status_pb2.StatusProto),
    ]
    ours += [
        (getattr(kserve_pb2, name), getattr(service_pb2, name))
        for name in kserve_pb2.DESCRIPTOR.message_types_by_name
    ]
    return ours


def _compare(mine: Descriptor, theirs: Descriptor, where: str) -> list[str]:
    problems = []
    for field in mine.fields:
        other = theirs.fields_by_number.get(field.number)
        if other is None:
            problems.append(f"{where}.{field.name}: no field {field.number} in {theirs.full_name}")
            continue
        # Enums travel as varints: an int32 may stand for one (StatusProto.error_code).
        types = {field.type, other.type} - {FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_INT32}
        if field.type != other.type and types:
            problems.append(f"{where}.{field.name}: type {field.type} != {other.type}")
        if field.is_repeated != other.is_repeated or field.name != other.name:
            problems.append(f"{where}.{field.name}: differs from {other.name}")
        if field.message_type is not None and other.message_type is not None:
            inner = f"{where}.{field.name}"
            if field.message_type.full_name.startswith("google.protobuf."):
                assert field.message_type.full_name == other.message_type.full_name
            else:
                problems += _compare(field.message_type, other.message_type, inner)
        if field.enum_type is not None and other.enum_type is not None:
            theirs_values = {v.number: v.name for v in other.enum_type.values}
            for value in field.enum_type.values:
                if theirs_values.get(value.number) != value.name:
                    problems.append(f"{where}.{field.name}: enum {value.name}={value.number}")
    return problems


def test_every_field_matches_the_clients_descriptors() -> None:
    problems = []
    for mine, theirs in _pairs():
        problems += _compare(mine.DESCRIPTOR, theirs.DESCRIPTOR, mine.DESCRIPTOR.name)
    assert problems == []


def test_messages_round_trip_through_the_clients_classes() -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28, 1)
    theirs = predict_pb2.PredictRequest()
    theirs.model_spec.name = "gap"
    theirs.model_spec.version.value = 3
    theirs.model_spec.signature_name = "feature_maps"
    theirs.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    theirs.output_filter.append("conv1")
    mine = tfserving_pb2.PredictRequest.FromString(theirs.SerializeToString())
    assert (mine.model_spec.name, mine.model_spec.version.value) == ("gap", 3)
    assert mine.model_spec.signature_name == "feature_maps" and mine.output_filter == ["conv1"]
    tensor = mine.inputs["images"]
    assert tensor.dtype == tfserving_pb2.DT_UINT8
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 28, 28, 1]
    assert np.frombuffer(tensor.tensor_content, np.uint8).tobytes() == images.tobytes()
    answer = tfserving_pb2.PredictResponse()
    answer.outputs["probabilities"].dtype = tfserving_pb2.DT_FLOAT
    answer.outputs["probabilities"].tensor_shape.dim.add().size = 1
    answer.outputs["probabilities"].tensor_shape.dim.add().size = 2
    answer.outputs["probabilities"].tensor_content = np.array([[0.25, 0.75]], np.float32).tobytes()
    decoded = predict_pb2.PredictResponse.FromString(answer.SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(decoded.outputs["probabilities"]), [[0.25, 0.75]])


@pytest.mark.parametrize("module", [tfserving_pb2, kserve_pb2])
def test_the_generated_modules_are_current(module, tmp_path) -> None:
    """`make install` generates them; a .proto edited since must be generated again. (protoc
    runs in its own process: in one that has loaded TensorFlow it crashes.)"""
    subprocess.run([sys.executable, "-m", "service.rpc.build", "--out", str(tmp_path)], check=True)
    name = module.__name__.rsplit(".", 1)[1]
    assert (tmp_path / f"{name}.py").read_bytes() == Path(module.__file__).read_bytes()
