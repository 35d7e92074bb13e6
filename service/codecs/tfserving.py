"""TF Serving's REST API: status, metadata, and predict in row and columnar form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convbridge.card import ModelCard
from convbridge.signatures import (
    CLASS_INDEX,
    CLASSIFY,
    EXPLAIN,
    FEATURE_MAPS,
    HEATMAP,
    PROBABILITIES,
    SCORE,
    SIGNATURES,
)
from service.codecs.explanations import ClassError, class_index, explanation
from service.codecs.tensors import check_image_shape, decode_b64_image, pixels_from_values
from service.errors import bad_request

# TF Serving's ModelVersionStatus states for ours.
STATES = {"ready": "AVAILABLE", "loading": "LOADING", "failed": "END", "available": "START"}


@dataclass(frozen=True)
class PredictRequest:
    signature: str
    columnar: bool
    images: np.ndarray  # uint8 (n, height, width, channels)


def version_status(version: int, state: str, error: str | None) -> dict[str, Any]:
    return {
        "version": str(version),
        "state": STATES.get(state, "UNKNOWN"),
        "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error or ""},
    }


def _tensor_info(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in shape],
            "unknown_rank": False,
        },
        "name": name,
    }


def metadata(card: ModelCard) -> dict[str, Any]:
    """model_spec and signature_def in TF Serving's JSON form, from the model card."""
    image = [-1, *card.input.shape]
    layers = {
        layer.name: _tensor_info(f"StatefulPartitionedCall:{i}", "DT_FLOAT", [-1, *layer.shape])
        for i, layer in enumerate(card.layers)
    }
    probabilities = _tensor_info("StatefulPartitionedCall:0", "DT_FLOAT", [-1, len(card.classes)])
    height, width, _ = card.input.shape
    explained = {
        HEATMAP: _tensor_info("StatefulPartitionedCall:0", "DT_FLOAT", [-1, height, width]),
        CLASS_INDEX: _tensor_info("StatefulPartitionedCall:1", "DT_INT32", [-1]),
        SCORE: _tensor_info("StatefulPartitionedCall:2", "DT_FLOAT", [-1]),
    }
    signatures = {}
    for name, outputs in (
        (CLASSIFY, {PROBABILITIES: probabilities}),
        (FEATURE_MAPS, layers),
        (EXPLAIN, explained),
    ):
        if name not in card.signatures:
            continue
        inputs = {card.input.name: _tensor_info(f"{name}_{card.input.name}:0", "DT_UINT8", image)}
        if name == EXPLAIN:
            inputs[CLASS_INDEX] = _tensor_info(f"{name}_{CLASS_INDEX}:0", "DT_INT32", [-1])
        signatures[name] = {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
    return {
        "model_spec": {"name": card.name, "signature_name": "", "version": str(card.version)},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }


def parse_predict(body: Any, card: ModelCard, max_pixels: int, max_images: int) -> PredictRequest:
    """Validate a predict body and turn it into a uint8 batch."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name", CLASSIFY) or CLASSIFY
    if signature not in SIGNATURES:
        raise bad_request(
            f'Serving signature name: "{signature}" not found in signature def; '
            f"valid: {', '.join(SIGNATURES)}"
        )
    if ("instances" in body) == ("inputs" in body):
        raise bad_request("send exactly one of 'instances' (row format) or 'inputs' (columnar)")
    columnar = "inputs" in body
    values = body["inputs"] if columnar else body["instances"]
    if isinstance(values, dict):  # named inputs: our signatures have one, `images`
        unknown = set(values) - {card.input.name}
        if unknown or card.input.name not in values:
            raise bad_request(f"the only input is {card.input.name!r}; got {sorted(values)}")
        values = values[card.input.name]
    if not isinstance(values, list) or not values:
        raise bad_request("'instances'/'inputs' must be a non-empty list of images")
    if len(values) > max_images:
        raise bad_request(f"too many instances: at most {max_images} per request")
    images = [_instance(item, card, max_pixels, f"instance {i}") for i, item in enumerate(values)]
    return PredictRequest(signature, columnar, np.stack(images))


@dataclass(frozen=True)
class ExplainRequest:
    images: np.ndarray  # uint8 (n, height, width, channels)
    classes: np.ndarray  # int32 (n,): the class of each image, TOP_CLASS for its top one


def parse_explain(body: Any, card: ModelCard, max_pixels: int, max_images: int) -> ExplainRequest:
    """An :explain body (KServe v1's shape): ``instances`` as :predict takes them.

    The class of an instance: its own ``class_index`` (an instance ``{"images": ...,
    "class_index": 7}``), else the body's ``class_index`` (one for all, or a list with one per
    instance), else the model's top class. A class is an index or a label.
    """
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise bad_request('the request body must be a JSON object with "instances": [...]')
    unknown = set(body) - {"instances", "class_index"}
    if unknown:
        raise bad_request(f"unknown keys {sorted(unknown)}: send instances and class_index")
    instances: list[Any] = body["instances"]
    if not instances:
        raise bad_request("'instances' must be a non-empty list of images")
    if len(instances) > max_images:
        raise bad_request(f"too many instances: at most {max_images} per request")
    shared = body.get("class_index")
    if isinstance(shared, list) and len(shared) != len(instances):
        raise bad_request(
            f"class_index has {len(shared)} entries for {len(instances)} instances: "
            "send one per instance, or one for all"
        )
    images, classes = [], []
    for i, item in enumerate(instances):
        asked = shared[i] if isinstance(shared, list) else shared
        if isinstance(item, dict) and CLASS_INDEX in item:
            item = dict(item)
            asked = item.pop(CLASS_INDEX)
            if set(item) != {card.input.name}:
                raise bad_request(
                    f'instance {i}: with a class_index, send the image as {{"{card.input.name}": '
                    f"...}}, not keys {sorted(item)}"
                )
        images.append(_instance(item, card, max_pixels, f"instance {i}"))
        classes.append(_class(asked, card, f"instance {i}"))
    return ExplainRequest(np.stack(images), np.array(classes, dtype=np.int32))


def _class(asked: Any, card: ModelCard, where: str) -> int:
    if asked is not None and not isinstance(asked, (int, str)) or isinstance(asked, bool):
        raise bad_request(f"{where}: class_index must be an index or a label, not {asked!r}")
    try:
        return class_index(asked, card.classes)
    except ClassError as error:
        raise bad_request(f"{where}: {error}", valid_classes=error.valid) from None


def explain_response(outputs: dict[str, np.ndarray], card: ModelCard) -> dict[str, Any]:
    """``{"explanations": [{class_index, label, score, heatmap}, ...]}``, one per instance."""
    return {
        "explanations": [
            explanation(heatmap, index, score, card.classes)
            for heatmap, index, score in zip(
                outputs[HEATMAP], outputs[CLASS_INDEX], outputs[SCORE], strict=True
            )
        ]
    }


def _instance(item: Any, card: ModelCard, max_pixels: int, where: str) -> np.ndarray:
    if isinstance(item, dict) and set(item) == {card.input.name}:
        item = item[card.input.name]
    if isinstance(item, dict):
        if set(item) != {"b64"}:
            raise bad_request(
                f'{where}: an object must be {{"b64": ...}} or '
                f'{{"{card.input.name}": ...}}, not keys {sorted(item)}'
            )
        return decode_b64_image(item["b64"], card, max_pixels, where)
    return check_image_shape(pixels_from_values(item, where), card, where)


def predict_response(outputs: dict[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    """`predictions` (row) or `outputs` (columnar), collapsed for one output as TF Serving does."""
    if columnar:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    count = len(next(iter(outputs.values())))
    return {
        "predictions": [{name: value[i] for name, value in outputs.items()} for i in range(count)]
    }
