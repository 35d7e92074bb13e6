"""Export: signatures that match the Keras model, the card, version numbers, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from convbridge.card import CardError, ModelCard, read_card
from convbridge.layout import SAVED_MODEL_FILE, list_versions, next_version
from training.export import ExportError, export_model, make_card
from training.train import TrainConfig, TrainResult, predict_probabilities
from training.variants import BROADCAST_METHODS, VARIANTS, build_model

CASES = [(name, {}) for name in VARIANTS if name != "global_context"] + [
    ("global_context", {"broadcast": method}) for method in BROADCAST_METHODS
]


def untrained(variant: str, options: dict, digits, name: str | None = None):
    """A freshly built (untrained) model and its card: export must be exact either way."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(variant, digits.input_shape, len(digits.class_names), options)
    result = TrainResult(model, dict(options) or _defaults(variant), 0, 0.1, 2.3, 0.0, "default", 1)
    config = TrainConfig(variant=variant, options=options)
    return model, make_card(name or variant, digits, config, result)


def _defaults(variant: str) -> dict:
    from training.variants import resolve_options

    return resolve_options(variant)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits):
    repository = tmp_path_factory.mktemp("exported")
    out = {}
    for variant, options in CASES:
        name = f"{variant}_{options['broadcast']}" if options else variant
        model, card = untrained(variant, options, digits, name)
        path = export_model(model, card, repository, digits.test.images[:8])
        out[name] = (path, model, read_card(path))
    return out


@pytest.mark.parametrize("name", [f"{v}_{o['broadcast']}" if o else v for v, o in CASES])
def test_saved_model_matches_keras_and_lists_every_card_layer(exported, digits, name) -> None:
    path, model, card = exported[name]
    loaded = tf.saved_model.load(str(path))
    images = tf.constant(digits.test.images[:16])
    probabilities = loaded.signatures["serving_default"](images=images)["probabilities"].numpy()
    np.testing.assert_allclose(
        probabilities, predict_probabilities(model, images.numpy()), atol=1e-5
    )
    maps = loaded.signatures["feature_maps"](images=images)
    assert sorted(maps) == sorted(card.layer_names)
    for layer in card.layers:
        assert tuple(maps[layer.name].shape) == (16, *layer.shape)
        assert maps[layer.name].dtype == tf.float32
        expected = model.get_layer(layer.name).output
        assert layer.kind == ("map" if len(expected.shape) == 4 else "vector")


def test_card_holds_what_design_md_lists(exported, digits) -> None:
    path, model, card = exported["global_context_tile"]
    assert path.name == "1" and card.version == 1
    assert card.variant == "global_context" and card.options == {"broadcast": "tile"}
    assert card.input.shape == (28, 28, 1) and card.input.channels == "L"
    assert card.input.dtype == "uint8"
    assert card.classes == digits.class_names
    assert card.parameters == model.count_params()
    assert card.dataset.name == "digits" and card.dataset.test_samples == 1000
    assert card.tensorflow_version == tf.__version__
    assert card.layer("context").shape == (7, 7, 128)
    raw = json.loads((path / "assets.extra" / "model_card.json").read_text())
    assert ModelCard.from_dict(raw) == card


def test_saved_model_cli_lists_both_signatures(exported) -> None:
    path = exported["gap"][0]
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(path), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "signature_def['serving_default']" in shown.stdout
    assert "signature_def['feature_maps']" in shown.stdout
    assert "signature_def['explain']" in shown.stdout and "inputs['class_index']" in shown.stdout
    assert "inputs['images']" in shown.stdout
    assert "outputs['probabilities']" in shown.stdout
    assert "outputs['conv3']" in shown.stdout and "outputs['bridge']" in shown.stdout


def test_versions_count_up_and_skip_foreign_folders(tmp_path, digits) -> None:
    model, card = untrained("gap", {}, digits)
    sample = digits.test.images[:2]
    assert export_model(model, card, tmp_path, sample).name == "1"
    assert export_model(model, card, tmp_path, sample).name == "2"
    (tmp_path / "gap" / "9").mkdir()
    for foreign in (".tmp-leftover", "latest", "0", "07"):
        (tmp_path / "gap" / foreign).mkdir()
    assert list_versions(tmp_path / "gap") == [1, 2, 9]
    assert next_version(tmp_path / "gap") == 10
    assert read_card(export_model(model, card, tmp_path, sample)).version == 10


def test_a_reader_never_sees_half_a_model(tmp_path, digits) -> None:
    model, card = untrained("flatten", {}, digits)
    seen: list[tuple[int, bool, bool]] = []
    done = threading.Event()

    def scan() -> None:
        for version in list_versions(tmp_path / "flatten"):
            folder = tmp_path / "flatten" / str(version)
            seen.append(
                (
                    version,
                    (folder / SAVED_MODEL_FILE).is_file(),
                    (folder / "assets.extra" / "model_card.json").is_file(),
                )
            )

    def watch() -> None:
        while not done.is_set():
            scan()
        scan()  # once more after the last export, so its version is seen too

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(2):
            export_model(model, card, tmp_path, digits.test.images[:2])
    finally:
        done.set()
        watcher.join()
    assert {version for version, _, _ in seen} == {1, 2}
    assert all(complete and has_card for _, complete, has_card in seen)
    # The staging folders are gone too.
    assert sorted(p.name for p in (tmp_path / "flatten").iterdir()) == ["1", "2"]


def test_a_failed_export_leaves_nothing_behind(tmp_path, digits) -> None:
    model, card = untrained("gap", {}, digits)
    wrong = dataclasses.replace(
        card,
        layers=tuple(
            dataclasses.replace(layer, shape=(1, 2, 3)) if layer.name == "conv3" else layer
            for layer in card.layers
        ),
    )
    with pytest.raises(ExportError, match="conv3"):
        export_model(model, wrong, tmp_path, digits.test.images[:2])
    assert list((tmp_path / "gap").iterdir()) == []


def test_export_refuses_names_that_escape_the_repository(tmp_path, digits) -> None:
    model, card = untrained("gap", {}, digits)
    for name in ("..", "../evil", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="invalid model name"):
            export_model(
                model, dataclasses.replace(card, name=name), tmp_path, digits.test.images[:1]
            )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("classes"), "card.classes is missing"),
        (lambda d: d.update(parameters="many"), "card.parameters must be int"),
        (lambda d: d["input"].update(shape=[28, 28, 2]), "card.input.shape"),
        (lambda d: d.update(format=99), "format 1"),
        (lambda d: d["layers"][0].pop("kind"), "card.layers[0].kind is missing"),
    ],
)
def test_bad_cards_are_refused_with_the_field_named(exported, tmp_path, change, message) -> None:
    source = exported["gap"][0]
    target = tmp_path / "gap" / "1"
    shutil.copytree(source, target)
    card_file = target / "assets.extra" / "model_card.json"
    data = json.loads(card_file.read_text())
    change(data)
    card_file.write_text(json.dumps(data))
    with pytest.raises(CardError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_card(target)


def test_missing_and_unreadable_cards(tmp_path) -> None:
    with pytest.raises(CardError, match="no model card"):
        read_card(tmp_path)
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "model_card.json").write_text("{not json")
    with pytest.raises(CardError, match="unreadable"):
        read_card(tmp_path)


EXPLAINED = {
    "flatten": "conv3",
    "conv_pool": "pool",
    "gap": "conv3",
    "gmp": "conv3",
    "residual_gap": "residual_relu",
    "global_context_tile": "context_mix",
}


def _min_max(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize each map to the input (bilinear) and scale it to 0..1; written apart from
    training/explain.py so the test does not check the code against itself."""
    resized = tf.image.resize(maps[..., None], (height, width), method="bilinear").numpy()[..., 0]
    low = resized.min(axis=(1, 2), keepdims=True)
    span = resized.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 1e-12, (resized - low) / np.maximum(span, 1e-12), 0.0)


@pytest.mark.parametrize("name", list(EXPLAINED))
def test_explain_is_exported_beside_the_other_signatures(exported, digits, name) -> None:
    path, model, card = exported[name]
    assert card.signatures == ("serving_default", "feature_maps", "explain")
    assert card.explain_layer == EXPLAINED[name]
    loaded = tf.saved_model.load(str(path))
    images = digits.test.images[:4]
    probabilities = loaded.signatures["serving_default"](images=tf.constant(images))
    probabilities = probabilities["probabilities"].numpy()
    asked = np.array([-1, 3, -1, 9], dtype=np.int32)
    out = loaded.signatures["explain"](images=tf.constant(images), class_index=tf.constant(asked))
    chosen = out["class_index"].numpy()
    assert chosen.tolist() == [
        int(probabilities[0].argmax()),
        3,
        int(probabilities[2].argmax()),
        9,
    ]
    np.testing.assert_allclose(out["score"].numpy(), probabilities[np.arange(4), chosen], atol=1e-6)
    heatmap = out["heatmap"].numpy()
    assert heatmap.shape == (4, 28, 28) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() <= 1


@pytest.mark.parametrize("name", ["gap", "residual_gap"])
def test_grad_cam_of_a_gap_head_is_the_class_activation_map(exported, digits, name) -> None:
    """Zhou et al.'s CAM from the exported maps and the Dense weights, against explain."""
    path, model, card = exported[name]
    loaded = tf.saved_model.load(str(path))
    images = tf.constant(digits.test.images[:6])
    classes = np.arange(6, dtype=np.int32)
    maps = loaded.signatures["feature_maps"](images=images)[card.explain_layer].numpy()
    kernel = model.get_layer("probabilities").kernel.numpy()  # (channels, classes)
    cam = np.maximum(np.einsum("bhwk,kb->bhw", maps, kernel[:, classes]), 0)
    explained = loaded.signatures["explain"](images=images, class_index=tf.constant(classes))
    np.testing.assert_allclose(explained["heatmap"].numpy(), _min_max(cam, 28, 28), atol=1e-4)
