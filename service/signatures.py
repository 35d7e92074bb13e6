"""What a SavedModel must offer the service: checked at load, before it takes traffic."""

from __future__ import annotations

from typing import Any

from convbridge.card import ModelCard

SIGNATURES = ("serving_default", "feature_maps")


class SignatureError(ValueError):
    """The SavedModel's signatures do not match its card or the service's needs."""


def check_signatures(signatures: dict[str, Any], card: ModelCard) -> None:
    """The signatures take what the card promises and give what the service reads."""
    wanted = (None, *card.input.shape)
    for name, function in signatures.items():
        _, inputs = function.structured_input_signature
        spec = inputs.get(card.input.name)
        if (
            set(inputs) != {card.input.name}
            or spec.dtype.name != "uint8"
            or tuple(spec.shape) != wanted
        ):
            found = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in inputs.items())
            raise SignatureError(
                f"signature {name!r} takes {found or 'nothing'}; the card needs "
                f"{card.input.name}: uint8{list(wanted)}"
            )
    outputs = {
        "serving_default": {"probabilities"},
        "feature_maps": set(card.layer_names),
    }
    for name, needed in outputs.items():
        lacking = needed - set(signatures[name].structured_outputs)
        if lacking:
            raise SignatureError(f"signature {name!r} lacks outputs {sorted(lacking)}")
