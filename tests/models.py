"""Model repositories for tests that need more than the demo models: re-initialised weights,
exports from before a signature existed, and versions that cannot load."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from convbridge.card import read_card, write_card
from convbridge.layout import card_path


def export_untrained(repository: Path, name: str, variant: str, dataset, seed: int = 7) -> Path:
    """``variant`` with freshly initialised weights, exported by training/ as ``name`` (its
    next version): same architecture and card as a trained one, different answers."""
    import keras

    from training.export import export_model, make_card
    from training.train import TrainConfig, TrainResult
    from training.variants import build_model, resolve_options

    keras.utils.set_random_seed(seed)
    options = resolve_options(variant)
    model = build_model(variant, dataset.input_shape, len(dataset.class_names), options)
    result = TrainResult(model, options, 0, 0.0, 0.0, 0.0, "none (re-initialised)", 1)
    card = make_card(name, dataset, TrainConfig(variant=variant), result)
    return export_model(model, card, repository, dataset.test.images[:4])


def copy_version(source: Path, target: Path, name: str, version: int) -> Path:
    """A byte copy of a version folder, its card renamed and renumbered."""
    shutil.copytree(source, target)
    card = json.loads(card_path(target).read_text())
    card_path(target).write_text(json.dumps({**card, "name": name, "version": version}))
    return target


def broken_copy(source: Path, target: Path, name: str) -> Path:
    """A version whose card is fine but whose SavedModel cannot be read."""
    copy_version(source, target, name, 1)
    (target / "saved_model.pb").write_bytes(b"not a protobuf")
    return target


def export_without_explain(source: Path, target: Path, name: str) -> Path:
    """``source`` as an export from before the explain signature: two signatures, and a card
    without ``explain`` or the field naming its layer."""
    import tensorflow as tf

    trained = tf.saved_model.load(str(source))
    kept = {key: trained.signatures[key] for key in ("serving_default", "feature_maps")}
    tf.saved_model.save(trained, str(target), signatures=kept)
    card = dataclasses.replace(
        read_card(source), name=name, signatures=tuple(kept), explain_layer=None
    )
    write_card(target, card)
    raw = json.loads(card_path(target).read_text())
    raw.pop("explain_layer", None)
    card_path(target).write_text(json.dumps(raw))
    return target


def export_slow(
    source: Path, target: Path, name: str, seconds: float, only_white: bool = False
) -> Path:
    """``source`` whose classification takes ``seconds`` more a call: a TensorFlow sleep (the
    tf.data sleep transformation) runs inside the signature before the model. A batch is then
    held in flight for as long as a test needs, with no clock in the test and no CPU spent.

    ``only_white``: only a batch whose every pixel is 255 sleeps (a call that sticks on
    demand, while warm-up's black images and every other request run at full speed)."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops import testing  # the sleep transformation

    trained = tf.saved_model.load(str(source))
    classify = trained.signatures["serving_default"]
    spec = classify.structured_input_signature[1]["images"]
    pause = int(seconds * 1_000_000)

    class Slow(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trained = trained  # its variables are saved with this module

        @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name="images")])
        def serving_default(self, images):
            sleep = tf.constant(pause, tf.int64)
            if only_white:
                sleep = tf.where(tf.reduce_min(images) == 255, sleep, tf.constant(0, tf.int64))
            delayed = tf.data.Dataset.from_tensors(images).apply(testing.sleep(sleep))
            return classify(images=delayed.get_single_element())

    module = Slow()
    signatures = {key: trained.signatures[key] for key in trained.signatures}
    signatures["serving_default"] = module.serving_default
    tf.saved_model.save(module, str(target), signatures=signatures)
    shutil.copytree(source / "assets.extra", target / "assets.extra", dirs_exist_ok=True)
    card = json.loads(card_path(target).read_text())
    card_path(target).write_text(json.dumps({**card, "name": name, "version": 1}))
    return target
