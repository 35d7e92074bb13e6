"""What the engine reports about its models: plain, immutable snapshots.

They hold data only (no locks, tasks or TensorFlow objects), so the HTTP side can read them
without reaching into the catalogue, and a process boundary can carry them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from convbridge.card import ModelCard
from service.inference.batch import BatchStats
from service.inference.errors import ModelNotReadyError


class State(enum.StrEnum):
    AVAILABLE = "available"  # on disk, not loaded (older versions load when a request names them)
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: str | None = None
    load_seconds: float | None = None
    card: ModelCard | None = None  # once loaded, or read for GET /models/{name}


@dataclass(frozen=True)
class ModelStatus:
    name: str
    versions: tuple[VersionStatus, ...]  # ascending
    served_version: int | None  # the newest ready version
    device: str | None  # where the served version runs; None when none is served

    def version(self, number: int) -> VersionStatus | None:
        return next((v for v in self.versions if v.version == number), None)

    @property
    def ready_versions(self) -> list[int]:
        return [v.version for v in self.versions if v.state is State.READY]


def not_serving(status: ModelStatus) -> ModelNotReadyError:
    """Why a model with no ready version cannot serve a request that names no version."""
    if not status.versions:
        return ModelNotReadyError(f"model {status.name!r} has no versions in the repository")
    newest = status.versions[-1]
    reason = f": {newest.error}" if newest.error else ""
    return ModelNotReadyError(
        f"model {status.name!r} version {newest.version} is {newest.state.value}{reason}"
    )


@dataclass(frozen=True)
class Readiness:
    ready: bool
    models: dict[str, str] = field(default_factory=dict)  # state of each model's newest version
    error: str | None = None  # why the engine is not serving at all (starting, start-up failed)


@dataclass(frozen=True)
class ModelInfo:
    """The version a request was given: enough to decode for it and to label the answer."""

    name: str
    version: int
    device: str
    card: ModelCard


@dataclass(frozen=True)
class Result:
    """One signature's outputs for a request's images, row for row, and how they were made."""

    outputs: dict[str, np.ndarray]
    stats: BatchStats
