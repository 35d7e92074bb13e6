"""The inference side: catalogue, loaded models, batching, reload and the TensorFlow runtime.

It imports no web framework. The HTTP side reaches it only through :class:`Engine`, its
:class:`Lease` and the snapshots and errors exported here.
"""

from service.inference.engine import Engine, Lease
from service.inference.errors import (
    BatchSizeMismatchError,
    DeadlineExceededError,
    InferenceError,
    ModelNotFoundError,
    ModelNotReadyError,
    NoExplanationsError,
    QueueFullError,
    UnknownSignatureError,
)
from service.inference.interface import EngineLike, LeaseLike
from service.inference.status import (
    ModelInfo,
    ModelStatus,
    Readiness,
    Result,
    State,
    VersionStatus,
)

__all__ = [
    "BatchSizeMismatchError",
    "DeadlineExceededError",
    "Engine",
    "EngineLike",
    "InferenceError",
    "Lease",
    "LeaseLike",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelStatus",
    "QueueFullError",
    "Readiness",
    "Result",
    "State",
    "NoExplanationsError",
    "UnknownSignatureError",
    "VersionStatus",
]
