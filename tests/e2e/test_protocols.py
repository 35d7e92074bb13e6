"""TF Serving REST and KServe v2 over a real socket, checked against the SavedModel itself."""

from __future__ import annotations

import base64
import struct

import numpy as np
import orjson
import pytest
import tensorflow as tf

from service.api.outline import INLINE_BYTES
from tests.images import digit_png, kserve_tensor

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def gap(demo_repository):
    return tf.saved_model.load(str(demo_repository / "gap" / "1"))


@pytest.fixture(scope="module")
def sample(digits, gap):
    images = digits.test.images[:4]
    probabilities = gap.signatures["serving_default"](images=tf.constant(images))["probabilities"]
    maps = gap.signatures["feature_maps"](images=tf.constant(images))
    return images, probabilities.numpy(), {k: v.numpy() for k, v in maps.items()}


def test_tfserving_status_and_metadata(client) -> None:
    status = client.get("/v1/models/gap").json()["model_version_status"]
    assert status == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert (
        client.get("/v1/models/gap/versions/1").json()["model_version_status"][0]["version"] == "1"
    )
    metadata = client.get("/v1/models/gap/metadata").json()
    assert metadata["model_spec"] == {"name": "gap", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    image = signatures["serving_default"]["inputs"]["images"]
    assert image["dtype"] == "DT_UINT8"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    probabilities = signatures["serving_default"]["outputs"]["probabilities"]
    assert [d["size"] for d in probabilities["tensor_shape"]["dim"]] == ["-1", "10"]
    assert sorted(signatures["feature_maps"]["outputs"]) == sorted(
        ["conv1", "pool1", "conv2", "pool2", "conv3", "bridge"]
    )


def test_tfserving_predict_row_columnar_and_b64(client, sample) -> None:
    images, expected, _ = sample
    rows = client.post("/v1/models/gap:predict", json={"instances": images.tolist()})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose(rows.json()["predictions"], expected, atol=1e-5)
    columns = client.post(
        "/v1/models/gap/versions/1:predict", json={"inputs": {"images": images[..., 0].tolist()}}
    )  # no channel axis
    np.testing.assert_allclose(columns.json()["outputs"], expected, atol=1e-5)
    encoded = [{"b64": base64.b64encode(digit_png(image)).decode()} for image in images]
    b64 = client.post("/v1/models/gap:predict", json={"instances": encoded})
    np.testing.assert_allclose(b64.json()["predictions"], expected, atol=1e-5)
    # The same outline as the native routes: which version answered, and where time went.
    for answer in (rows, columns, b64):
        assert answer.headers["x-model-version"] == "1"
        stages = [part.split(";")[0] for part in answer.headers["server-timing"].split(", ")]
        assert stages == ["decode", "queue", "compute", "encode"]


def test_small_and_large_bodies_and_answers_alike(client, sample) -> None:
    """Up to INLINE_BYTES a body is parsed, and an answer encoded, on the front end's event
    loop; above, on its decoder threads. Either way the answers are the SavedModel's."""
    images, expected, maps = sample
    many = np.concatenate([images] * 8)  # 32 digits
    small, large = {"instances": images[:1].tolist()}, {"instances": many.tolist()}
    assert len(orjson.dumps(small)) <= INLINE_BYTES < len(orjson.dumps(large))
    for body, wanted in ((small, expected[:1]), (large, np.concatenate([expected] * 8))):
        answer = client.post("/v1/models/gap:predict", json=body)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], wanted, atol=1e-5)
    # KServe v2: one small answer (probabilities), one large (a feature map of 32 images).
    tensor = kserve_tensor(shape=[32, 28, 28, 1], data=many.ravel().tolist())
    for output, wanted in (("probabilities", np.concatenate([expected] * 8)), ("conv1", None)):
        answer = client.post(
            "/v2/models/gap/infer", json={"inputs": [tensor], "outputs": [{"name": output}]}
        )
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["outputs"]
        if wanted is None:
            wanted = np.concatenate([maps[output]] * 8)
            assert wanted.nbytes > INLINE_BYTES
        else:
            assert wanted.nbytes <= INLINE_BYTES
        np.testing.assert_allclose(np.reshape(result["data"], result["shape"]), wanted, atol=1e-4)


def test_tfserving_feature_maps_signature(client, sample) -> None:
    images, _, maps = sample
    rows = client.post(
        "/v1/models/gap:predict",
        json={"signature_name": "feature_maps", "instances": images[:2].tolist()},
    )
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    assert len(predictions) == 2 and sorted(predictions[0]) == sorted(maps)
    np.testing.assert_allclose(predictions[1]["conv3"], maps["conv3"][1], atol=1e-5)
    columns = client.post(
        "/v1/models/gap:predict",
        json={"signature_name": "feature_maps", "inputs": images[:2].tolist()},
    )
    np.testing.assert_allclose(columns.json()["outputs"]["bridge"], maps["bridge"][:2], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"instances": [[0]], "inputs": [[0]]}, 400, "exactly one of"),
        ({"signature": "x"}, 400, "exactly one of"),
        ({"instances": [[[0] * 3] * 28]}, 400, "does not match the model input"),
        ({"instances": [[["a"] * 28] * 28]}, 400, "must be numbers"),
        ({"instances": [[[300] * 28] * 28]}, 400, "0..255"),
        ({"instances": [[[0.5] * 28] * 28]}, 400, "whole numbers"),
        ({"instances": [{"b64": "***"}]}, 400, "not valid base64"),
        ({"instances": [{"b64": base64.b64encode(b"text").decode()}]}, 400, "not an image"),
        (
            {"signature_name": "classify", "instances": [[[0] * 28] * 28]},
            400,
            "not found in signature def",
        ),
        ({"instances": [{"pixels": 1}]}, 400, "b64"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_tfserving_malformed_requests(client, body, status, words) -> None:
    response = client.post("/v1/models/gap:predict", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_tfserving_errors_for_unknown_things(client) -> None:
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/v1/models/gap/versions/7").status_code == 404
    assert client.get("/v1/models/gap/versions/x").status_code == 400
    assert client.post("/v1/models/nope:predict", json={"instances": [[0]]}).status_code == 404
    nan = client.post("/v1/models/gap:predict", content=b'{"instances": [NaN]}')
    assert nan.status_code == 400 and "not valid JSON" in nan.json()["error"]
    labels = client.get("/v1/models/gap/labels/stable")
    assert labels.status_code == 404 and "not supported" in labels.json()["error"]


def test_tritonclient_health_metadata_and_inference(server, sample) -> None:
    import tritonclient.http as triton

    images, expected, maps = sample
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("gap")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("gap")
    assert metadata["inputs"] == [
        {"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28, 1]},
        {"name": "class_index", "datatype": "INT32", "shape": [-1]},  # optional: for heatmap
    ]
    assert {"name": "heatmap", "datatype": "FP32", "shape": [-1, 28, 28]} in metadata["outputs"]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]} in metadata["outputs"]
    assert "classification" in client.get_server_metadata()["extensions"]
    for binary in (True, False):
        tensor = triton.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("conv3", binary_data=binary),
        ]
        result = client.infer("gap", [tensor], outputs=outputs, request_id=f"r{binary}")
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("conv3"), maps["conv3"], atol=1e-5)
        assert result.get_response()["id"] == f"r{binary}"
        top = client.infer(
            "gap",
            [tensor],
            outputs=[
                triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
            ],
        )
        first = top.as_numpy("probabilities")[0][0]
        score, index, label = (first.decode() if isinstance(first, bytes) else first).split(":")
        assert int(index) == int(np.argmax(expected[0])) == int(label)
        assert float(score) == pytest.approx(float(expected[0].max()), abs=1e-5)


def test_kserve_json_fp32_and_binary_by_hand(client, sample) -> None:
    images, expected, _ = sample
    request = {
        "id": "42",
        "parameters": {"note": "x"},
        "inputs": [
            {
                "name": "images",
                "shape": list(images.shape),
                "datatype": "FP32",
                "data": images.astype(np.float32).ravel().tolist(),
            }
        ],
        "outputs": [{"name": "probabilities"}],
    }
    response = client.post("/v2/models/gap/versions/1/infer", json=request)
    assert response.headers["x-model-version"] == "1"
    assert "compute;dur=" in response.headers["server-timing"]
    answer = response.json()
    assert answer["id"] == "42" and answer["model_version"] == "1"
    output = answer["outputs"][0]
    assert output["shape"] == [4, 10] and output["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(output["data"], (4, 10)), expected, atol=1e-5)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": list(images.shape),
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": images.size},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    raw = client.post(
        "/v2/models/gap/infer",
        content=header + images.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    length = int(raw.headers["inference-header-content-length"])
    document = orjson.loads(raw.content[:length])
    first = document["outputs"][0]
    assert first["name"] == "probabilities"
    size = first["parameters"]["binary_data_size"]
    values = np.frombuffer(raw.content[length : length + size], dtype=np.float32).reshape(4, 10)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    assert struct.calcsize("<I") == 4  # BYTES tensors use 4-byte length prefixes (see the codec)


BINARY_SIZE = {"parameters": {"binary_data_size": 784}}
HEATMAP = [{"name": "heatmap"}]


def CLASSES(**changes: object) -> dict:  # noqa: N802 (reads as the constant it varies)
    return {"name": "class_index", "shape": [1], "datatype": "INT32", "data": [3], **changes}


@pytest.mark.parametrize(
    ("request_body", "headers", "words"),
    [
        ({"inputs": [kserve_tensor(shape=[1, 28, 28])]}, {}, "must be [batch, 28, 28, 1]"),
        ({"inputs": [kserve_tensor(datatype="INT64")]}, {}, "UINT8 or FP32"),
        ({"inputs": [kserve_tensor(name="pixels")]}, {}, "unknown input"),
        ({"inputs": [kserve_tensor(data=[0] * 10)]}, {}, "needs 784"),
        ({"inputs": [kserve_tensor()], "outputs": [{"name": "logits"}]}, {}, "unknown output"),
        (
            {"inputs": [{**kserve_tensor(), **BINARY_SIZE}]},
            {"Inference-Header-Content-Length": "100000"},
            "must be the byte length",
        ),
        ({"inputs": []}, {}, "exactly one input"),
        ({"inputs": [kserve_tensor(), kserve_tensor()]}, {}, "exactly one input"),
        (
            {"inputs": [kserve_tensor(), CLASSES(datatype="FP32")], "outputs": HEATMAP},
            {},
            "must be INT32 of shape [1]",
        ),
        (
            {"inputs": [kserve_tensor(), CLASSES(shape=[2], data=[1, 2])], "outputs": HEATMAP},
            {},
            "must be INT32 of shape [1]",
        ),
        (
            {"inputs": [kserve_tensor(), CLASSES(data=[10])], "outputs": HEATMAP},
            {},
            "-1 (the top one) or 0 to 9",
        ),
        (
            {"inputs": [kserve_tensor(), CLASSES(data=["7"])], "outputs": HEATMAP},
            {},
            "integer",
        ),
    ],
)
def test_kserve_malformed_requests(client, request_body, headers, words) -> None:
    response = client.post(
        "/v2/models/gap/infer", content=orjson.dumps(request_body), headers=headers
    )
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_kserve_routes_and_openapi(client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/models/gap/ready").json()["ready"] is True
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/gap/versions/1").json()["versions"] == ["1"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/models/{name}:predict",
        "/v1/models/{name}/versions/{version}/metadata",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2",
    ):
        assert path in paths, path
