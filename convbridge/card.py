"""The model card: what a SavedModel is, how it was trained and how well it did.

Training writes it to ``<version>/assets.extra/model_card.json``; the service reads it back with
:func:`read_card` and never needs the Keras code that built the model.
"""

from __future__ import annotations

import json
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from convbridge.layout import card_path
from convbridge.signatures import INPUT, SIGNATURES

CARD_FORMAT = 1
CHANNEL_MODES = {1: "L", 3: "RGB"}


class CardError(ValueError):
    """A model card is missing, unreadable or does not match the schema."""


@dataclass(frozen=True)
class LayerInfo:
    """One layer whose output the ``feature_maps`` signature exposes."""

    name: str
    shape: tuple[int, ...]  # without the batch axis: (h, w, c) for maps, (features,) for vectors
    kind: str  # "map" or "vector"


@dataclass(frozen=True)
class InputInfo:
    """What the signatures take: raw pixels, batch first."""

    shape: tuple[int, ...]  # (height, width, channels)
    channels: str  # Pillow mode the pixels are in: "L" or "RGB"
    dtype: str = "uint8"
    name: str = INPUT  # the signatures' input key


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str
    train_samples: int
    validation_samples: int
    test_samples: int
    seed: int


@dataclass(frozen=True)
class TrainingInfo:
    epochs_requested: int
    epochs_run: int
    batch_size: int
    learning_rate: float
    optimizer: str
    early_stopping_patience: int
    strategy: str
    replicas: int
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    """Scores on the held-out split, which training never saw."""

    accuracy: float
    loss: float
    samples: int


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: int
    variant: str
    bridge: str
    options: dict[str, Any]
    input: InputInfo
    classes: tuple[str, ...]
    layers: tuple[LayerInfo, ...]
    parameters: int
    dataset: DatasetInfo
    training: TrainingInfo
    evaluation: Evaluation
    tensorflow_version: str
    keras_version: str
    created: str
    signatures: tuple[str, ...] = SIGNATURES
    # The layer whose maps the explain signature weighs; None: exported without explain.
    explain_layer: str | None = None
    format: int = CARD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerInfo:
        """The exposed layer called ``name``; KeyError when there is none."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """Build a card from parsed JSON, or raise CardError naming the first bad field."""
        card: ModelCard = _from_dict(cls, data, "card")
        if card.format != CARD_FORMAT:
            raise CardError(f"card.format is {card.format}; this code reads format {CARD_FORMAT}")
        if len(card.input.shape) != 3 or card.input.shape[2] not in CHANNEL_MODES:
            raise CardError(
                f"card.input.shape must be (height, width, 1 or 3), not {card.input.shape}"
            )
        if not card.classes:
            raise CardError("card.classes is empty")
        return card


def write_card(version_path: Path, card: ModelCard) -> Path:
    """Write ``card`` into a version folder; returns the file written."""
    path = card_path(version_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_card(version_path: Path) -> ModelCard:
    """Read and validate the card of a version folder."""
    path = card_path(version_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CardError(f"no model card at {path}") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CardError(f"model card {path} is unreadable: {error}") from error
    return ModelCard.from_dict(data)


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise CardError(f"{where} must be an object, not {type(data).__name__}")
    hints = get_type_hints(cls)
    values = {}
    for spec in fields(cls):
        if spec.name not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise CardError(f"{where}.{spec.name} is missing")
            continue
        values[spec.name] = _convert(hints[spec.name], data[spec.name], f"{where}.{spec.name}")
    return cls(**values)


def _convert(annotation: Any, value: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if is_dataclass(annotation):
        return _from_dict(annotation, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise CardError(f"{where} must be a list")
        element = get_args(annotation)[0]
        return tuple(_convert(element, item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise CardError(f"{where} must be an object")
        return dict(value)
    if origin in (Union, types.UnionType) or annotation is Any:
        return value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    raise CardError(f"{where} must be {annotation.__name__}, not {type(value).__name__}")
