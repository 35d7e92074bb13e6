"""What a SavedModel must offer the service: checked at load, before it takes traffic."""

from __future__ import annotations

from typing import Any

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY, FEATURE_MAPS, PROBABILITIES, SIGNATURES


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
    return tuple(name for name in card.signatures if name in SIGNATURES)


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
    outputs = {CLASSIFY: {PROBABILITIES}, FEATURE_MAPS: set(card.layer_names)}
    for name, needed in outputs.items():
        lacking = needed - set(signatures[name].structured_outputs)
        if lacking:
            raise SignatureError(f"signature {name!r} lacks outputs {sorted(lacking)}")
