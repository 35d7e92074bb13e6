"""gRPC over a real socket, with the clients people already run: tensorflow-serving-api's
stubs and tritonclient.grpc, against the session's server (two front ends and an executor).

Answers are checked against the REST API on the same pixels and the SavedModel itself.
"""

from __future__ import annotations

import json
import shutil

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from convbridge.layout import card_path
from tests.conftest import start_server
from tests.metrics import samples, value
from tests.numerics import assert_same_float32

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as open_channel:
        grpc.channel_ready_future(open_channel).result(timeout=30)
        yield open_channel


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict(name: str, images: np.ndarray, signature: str = "", version: int | None = None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


def _rest_probabilities(client: httpx.Client, name: str, images: np.ndarray) -> np.ndarray:
    answer = client.post(f"/v1/models/{name}:predict", json={"instances": images.tolist()})
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["predictions"], dtype=np.float32)


def test_tfserving_predict_equals_rest(stub, client, digits) -> None:
    images = digits.test.images[:5]
    for name in ("gap", "flatten"):
        answer = stub.Predict(_predict(name, images), timeout=30)
        probabilities = tf.make_ndarray(answer.outputs["probabilities"])
        np.testing.assert_allclose(
            probabilities, _rest_probabilities(client, name, images), atol=1e-6
        )
        assert answer.model_spec.name == name and answer.model_spec.version.value == 1
        assert answer.model_spec.signature_name == "serving_default"
        assert (probabilities.argmax(axis=1) == digits.test.labels[:5]).mean() >= 0.8


def test_tfserving_feature_maps_pinned_version_and_filter(stub, demo_repository, digits) -> None:
    images = digits.test.images[:2]
    request = _predict("gmp", images, "feature_maps", version=1)
    request.output_filter.extend(["conv1", "bridge"])
    answer = stub.Predict(request, timeout=30)
    assert sorted(answer.outputs) == ["bridge", "conv1"]
    expected = tf.saved_model.load(str(demo_repository / "gmp" / "1")).signatures["feature_maps"](
        images=tf.constant(images)
    )
    for layer in ("conv1", "bridge"):
        assert_same_float32(tf.make_ndarray(answer.outputs[layer]), expected[layer].numpy())
    assert answer.model_spec.version.value == 1
    # The explain signature too, with its optional class_index input.
    request = _predict("gap", images, "explain")
    request.inputs["class_index"].CopyFrom(tf.make_tensor_proto(np.array([3, -1], np.int32)))
    explained = stub.Predict(request, timeout=30)
    assert tf.make_ndarray(explained.outputs["heatmap"]).shape == (2, 28, 28)
    assert tf.make_ndarray(explained.outputs["class_index"])[0] == 3


def test_tfserving_metadata_and_status(stub, channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "gap"
    request.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    assert sorted(signatures.signature_def) == ["explain", "feature_maps", "serving_default"]
    image = signatures.signature_def["serving_default"].inputs["images"]
    assert image.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 28, 28, 1]
    assert answer.model_spec.version.value == 1

    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "gap"}), timeout=30
    )
    (version,) = status.model_version_status
    assert version.version == 1 and version.state == version.AVAILABLE
    assert version.status.error_code == 0


def test_classify_and_regress_say_they_are_not_for_images(stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(classification_pb2.ClassificationRequest(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "tf.Example" in caught.value.details() and "Predict" in caught.value.details()


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ("dtype", grpc.StatusCode.INVALID_ARGUMENT, "must be DT_UINT8"),
        ("shape", grpc.StatusCode.INVALID_ARGUMENT, "[batch, 28, 28, 1]"),
        ("missing", grpc.StatusCode.INVALID_ARGUMENT, "takes ['images']"),
        ("model", grpc.StatusCode.NOT_FOUND, "available models"),
        ("version", grpc.StatusCode.NOT_FOUND, "no version 9"),
        ("signature", grpc.StatusCode.INVALID_ARGUMENT, "not found in signature def"),
        ("filter", grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found"),
    ],
)
def test_bad_predict_requests_get_their_codes(stub, client, digits, change, code, words) -> None:
    images = digits.test.images[:1]
    request = _predict("gap", images)
    if change == "dtype":
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images.astype(np.float32)))
    elif change == "shape":
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images[:, :20]))
    elif change == "missing":
        del request.inputs["images"]
        request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(images))
    elif change == "model":
        request.model_spec.name = "nope"
    elif change == "version":
        request.model_spec.version.value = 9
    elif change == "signature":
        request.model_spec.signature_name = "regress"
    else:
        request.output_filter.append("logits")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    assert words in caught.value.details()
    assert client.get("/readyz").status_code == 200


def test_oversized_messages_and_expired_deadlines(stub, client) -> None:
    # 17 MiB of pixels: over the 16 MiB message limit (max_body_bytes), refused by gRPC itself.
    huge = _predict("gap", np.zeros((22_000, 28, 28, 1), np.uint8))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(huge, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A deadline no batch can meet: the server answers DEADLINE_EXCEEDED, never late.
    request = _predict("flatten", np.zeros((64, 28, 28, 1), np.uint8))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=0.002)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.get("/readyz").status_code == 200
    small = stub.Predict(_predict("gap", np.zeros((1, 28, 28, 1), np.uint8)), timeout=30)
    assert "probabilities" in small.outputs


def test_tritonclient_grpc(server, client, demo_repository, digits) -> None:
    import tritonclient.grpc as triton

    images = digits.test.images[:4]
    expected = _rest_probabilities(client, "gap", images)
    maps = tf.saved_model.load(str(demo_repository / "gap" / "1")).signatures["feature_maps"](
        images=tf.constant(images)
    )
    triton_client = triton.InferenceServerClient(url=server.grpc_target)
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("gap") and triton_client.is_model_ready("gap", "1")
    metadata = triton_client.get_model_metadata("gap", as_json=True)
    assert metadata["inputs"][0] == {
        "name": "images",
        "datatype": "UINT8",
        "shape": ["-1", "28", "28", "1"],
    }
    assert "classification" in triton_client.get_server_metadata(as_json=True)["extensions"]

    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("conv3")]
    result = triton_client.infer("gap", [tensor], outputs=outputs, request_id="g1")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert_same_float32(result.as_numpy("conv3"), maps["conv3"].numpy())
    assert result.get_response().id == "g1"

    top = triton_client.infer(
        "gap", [tensor], outputs=[triton.InferRequestedOutput("probabilities", class_count=2)]
    )
    best = expected.argmax(axis=1)
    for row, index, probabilities in zip(
        top.as_numpy("probabilities"), best, expected, strict=True
    ):
        score, position, label = row[0].decode().split(":")
        assert int(position) == index and label == digits.class_names[index]
        assert float(score) == pytest.approx(float(probabilities[index]), abs=1e-6)

    chosen = triton.InferInput("class_index", [4], "INT32")
    chosen.set_data_from_numpy(np.array([1, -1, 2, -1], np.int32))
    heat = triton_client.infer(
        "gap", [tensor, chosen], outputs=[triton.InferRequestedOutput("heatmap")]
    )
    explain = tf.saved_model.load(str(demo_repository / "gap" / "1")).signatures["explain"]
    reference = explain(images=tf.constant(images), class_index=tf.constant([1, -1, 2, -1]))
    np.testing.assert_allclose(heat.as_numpy("heatmap"), reference["heatmap"].numpy(), atol=1e-5)

    # Typed contents rather than raw bytes, as some clients send them.
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as raw_channel:
        request = service_pb2.ModelInferRequest(model_name="gap", id="typed")
        entry = request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28, 1])
        entry.contents.uint_contents.extend(images[0].ravel().tolist())
        request.outputs.add(name="probabilities")
        answer = service_pb2_grpc.GRPCInferenceServiceStub(raw_channel).ModelInfer(
            request, timeout=30
        )
    typed = np.frombuffer(answer.raw_output_contents[0], np.float32)
    np.testing.assert_allclose(typed, expected[0], atol=1e-6)

    with pytest.raises(triton.InferenceServerException) as caught:
        triton_client.infer("nope", [tensor])
    assert "StatusCode.NOT_FOUND" in str(caught.value.status())
    wrong = triton.InferInput("images", [1, 28, 28], "UINT8")
    wrong.set_data_from_numpy(images[:1, :, :, 0])
    with pytest.raises(triton.InferenceServerException) as caught:
        triton_client.infer("gap", [wrong])
    assert "INVALID_ARGUMENT" in str(caught.value.status())
    assert "[batch, 28, 28, 1]" in caught.value.message()


def test_health_follows_readiness_and_metrics_count_grpc(server, channel, client) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    before = samples(client.get("/metrics").text)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(3):
        stub.Predict(_predict("gmp", np.zeros((1, 28, 28, 1), np.uint8)), timeout=30)
    after = samples(client.get("/metrics").text)
    labels = {"model": "gmp", "endpoint": "grpc_predict", "outcome": "ok", "protocol": "grpc"}
    requests = "convbridge_requests_total"
    assert value(after, requests, **labels) - value(before, requests, **labels) == 3
    calls = "convbridge_grpc_request_duration_seconds_count"
    call = {"service": "tensorflow.serving.PredictionService", "method": "Predict", "code": "OK"}
    assert value(after, calls, **call) - value(before, calls, **call) >= 3


def test_a_token_is_required_and_a_failed_model_is_unavailable(gap_repository, tmp_path) -> None:
    """A server with a token, serving `gap` beside `broken`, whose SavedModel cannot load."""
    root = tmp_path / "models"
    shutil.copytree(gap_repository / "gap", root / "gap")
    shutil.copytree(gap_repository / "gap" / "1", root / "broken" / "1")
    card = json.loads(card_path(root / "broken" / "1").read_text())
    card_path(root / "broken" / "1").write_text(json.dumps({**card, "name": "broken"}))
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    instance = start_server(
        root, tmp_path / "server.log", CONVBRIDGE_API_TOKEN="s3cret", CONVBRIDGE_WORKERS="1"
    )
    token = [("authorization", "Bearer s3cret")]
    try:
        instance.wait_ready()
        with grpc.insecure_channel(instance.grpc_target) as secured:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(secured)
            request = _predict("gap", np.zeros((1, 28, 28, 1), np.uint8))
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=30, metadata=[("authorization", "Bearer wrong")])
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = stub.Predict(request, timeout=30, metadata=token)
            assert "probabilities" in answer.outputs
            health = health_pb2_grpc.HealthStub(secured).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need none
            # A model that failed to load: UNAVAILABLE (REST's 503), the others serve on.
            broken = _predict("broken", np.zeros((1, 28, 28, 1), np.uint8))
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(broken, timeout=30, metadata=token)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "broken" in caught.value.details()
            assert "probabilities" in stub.Predict(request, timeout=30, metadata=token).outputs
    finally:
        assert instance.stop() == 0
