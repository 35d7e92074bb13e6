"""Layer outputs of the feature_maps signature: pick channels, reduce over space, encode npy/npz."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

REDUCTIONS = ("none", "mean", "max", "l2")
_PART = re.compile(r"^\s*(-?\d*)\s*(?::\s*(-?\d*)\s*)?$")


class SelectionError(ValueError):
    """A channel selection or reduction the layer cannot satisfy."""


@dataclass(frozen=True)
class LayerOutput:
    """One layer's (selected, reduced) output for one image."""

    name: str
    values: np.ndarray  # float32: (h, w, c) map or (c,) vector, no batch axis
    channels: list[int]  # indices into the layer's last axis
    total_channels: int
    kind: str  # "map" or "vector" after reduction
    reduce: str

    def summary(self) -> dict[str, object]:
        return {
            "shape": list(self.values.shape),
            "dtype": str(self.values.dtype),
            "kind": self.kind,
            "reduce": self.reduce,
            "channels": self.channels,
            "total_channels": self.total_channels,
            "min": float(self.values.min()) if self.values.size else None,
            "max": float(self.values.max()) if self.values.size else None,
            "mean": float(self.values.mean()) if self.values.size else None,
        }


def parse_channels(text: str | None, count: int) -> list[int]:
    """Parse ``0:16``, ``3``, ``0,5,9`` or ``0:4,10:12`` against a layer with ``count`` channels.

    Slices follow Python's rules (clipped to the layer); single indices must exist.
    """
    if text is None or text.strip() in ("", "all", ":"):
        return list(range(count))
    chosen: list[int] = []
    for part in text.split(","):
        match = _PART.match(part)
        if not match:
            raise SelectionError(
                f"channels {text!r} is not understood: use start:stop, single indices, "
                "or a comma-separated list such as 0:16 or 0,5,9"
            )
        start, stop = match.group(1), match.group(2)
        if ":" in part:
            indices = range(count)[slice(_int(start), _int(stop))]
            chosen.extend(indices)
        else:
            index = int(start)
            if not -count <= index < count:
                raise SelectionError(
                    f"channel {index} does not exist: this layer has channels 0 to {count - 1}"
                )
            chosen.append(index % count)
    if not chosen:
        raise SelectionError(
            f"channels {text!r} selects nothing from a layer with {count} channels"
        )
    return chosen


def _int(text: str) -> int | None:
    return int(text) if text not in ("", None) else None


def select_and_reduce(
    name: str, values: np.ndarray, channels: str | None, reduce: str
) -> LayerOutput:
    """Select channels on the last axis, then reduce over the spatial axes.

    mean/max give one number per channel; l2 is the mean vector divided by its L2 norm.
    Vector layers have no spatial axes: mean and max leave them as they are.
    """
    if reduce not in REDUCTIONS:
        raise SelectionError(f"reduce={reduce!r} is not one of {', '.join(REDUCTIONS)}")
    total = values.shape[-1]
    picked = parse_channels(channels, total)
    selected = values[..., picked].astype(np.float32, copy=False)
    spatial = selected.ndim == 3
    if reduce in ("mean", "l2") and spatial:
        selected = selected.mean(axis=(0, 1))
    elif reduce == "max" and spatial:
        selected = selected.max(axis=(0, 1))
    if reduce == "l2":
        norm = float(np.linalg.norm(selected))
        selected = selected / norm if norm > 0 else selected
    kind = "map" if selected.ndim == 3 else "vector"
    return LayerOutput(
        name, np.ascontiguousarray(selected, dtype=np.float32), picked, total, kind, reduce
    )


def encode_npy(outputs: list[LayerOutput]) -> tuple[bytes, str, str]:
    """(body, media type, file suffix): one layer as .npy, several as .npz keyed by layer name."""
    buffer = io.BytesIO()
    if len(outputs) == 1:
        np.save(buffer, outputs[0].values, allow_pickle=False)
        return buffer.getvalue(), "application/x-npy", "npy"
    arrays: dict[str, Any] = {output.name: output.values for output in outputs}
    np.savez(buffer, **arrays)
    return buffer.getvalue(), "application/zip", "npz"
