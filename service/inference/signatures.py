"""What a SavedModel must offer the service: checked at load, before it takes traffic."""

from __future__ import annotations

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

# Signatures the service calls when a card lists them; older exports lack the later ones.
OPTIONAL = (EXPLAIN,)
# Inputs beside the images: (name, dtype) per signature.
_EXTRA_INPUTS = {EXPLAIN: ((CLASS_INDEX, "int32"),)}


class SignatureError(ValueError):
    """The SavedModel's signatures do not match its card or the service's needs."""


def served_signatures(card: ModelCard) -> tuple[str, ...]:
    """The signatures the service calls on a model: those its card lists that the service knows.

    Every model must offer classification and feature maps; signatures added later (a card
    lists what its export wrote) are served only where the card says they exist.
    """
    lacking = [name for name in SIGNATURES if name not in card.signatures]
    if lacking:
        raise SignatureError(
            f"the model card lists signatures {list(card.signatures)}; the service needs "
            f"{list(SIGNATURES)}"
        )
    return tuple(name for name in card.signatures if name in SIGNATURES or name in OPTIONAL)


def extra_inputs(signature: str) -> dict[str, str]:
    """The inputs ``signature`` takes beside the images: name -> dtype, one value per image."""
    return dict(_EXTRA_INPUTS.get(signature, ()))


def warm_up_inputs(signature: str, size: int) -> dict[str, np.ndarray]:
    """The extra inputs of a warm-up call at batch ``size``: class -1 (the top one) for explain."""
    return {name: np.full(size, -1, dtype) for name, dtype in extra_inputs(signature).items()}


def check_signatures(signatures: dict[str, Any], card: ModelCard) -> None:
    """The signatures take what the card promises and give what the service reads."""
    wanted = (None, *card.input.shape)
    for name, function in signatures.items():
        _, inputs = function.structured_input_signature
        spec = inputs.get(card.input.name)
        extra = extra_inputs(name)
        if (
            set(inputs) != {card.input.name, *extra}
            or spec.dtype.name != "uint8"
            or tuple(spec.shape) != wanted
            or any(inputs[key].dtype.name != dtype for key, dtype in extra.items())
        ):
            found = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in inputs.items())
            needed = ", ".join(
                [f"{card.input.name}: uint8{list(wanted)}"]
                + [f"{key}: {dtype}[None]" for key, dtype in extra.items()]
            )
            raise SignatureError(
                f"signature {name!r} takes {found or 'nothing'}; the card needs {needed}"
            )
    outputs: dict[str, set[str]] = {
        CLASSIFY: {PROBABILITIES},
        FEATURE_MAPS: set(card.layer_names),
        EXPLAIN: {HEATMAP, CLASS_INDEX, SCORE},
    }
    for name, wanted_outputs in outputs.items():
        if name not in signatures:
            continue
        lacking = wanted_outputs - set(signatures[name].structured_outputs)
        if lacking:
            raise SignatureError(f"signature {name!r} lacks outputs {sorted(lacking)}")
