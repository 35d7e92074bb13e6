"""What can go wrong on the inference side, in its own words: no HTTP status codes here.

The HTTP side maps each type to a status (and gRPC will map them to its codes); the messages
say what was wrong and how to fix it, so they can go to a client as they are.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error the engine raises on purpose."""


class ModelNotFoundError(InferenceError, LookupError):
    """No such model, or no such version of it; the message names the ones that exist."""


def unknown_model(name: str, known: list[str]) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} not found; available models: {', '.join(known) or 'none'}"
    )


def unknown_version(name: str, version: int | None, versions: list[int]) -> ModelNotFoundError:
    return ModelNotFoundError(f"model {name!r} has no version {version}; versions: {versions}")


class ModelNotReadyError(InferenceError):
    """The model exists but cannot serve now: starting, loading, or failed to load."""


class ModelLoadError(InferenceError):
    """A version could not be loaded; the message has no server paths."""


class UnknownSignatureError(InferenceError, LookupError):
    """The model version does not offer the signature asked for."""


class NoExplanationsError(UnknownSignatureError):
    """The version was exported before the ``explain`` signature existed."""


def unknown_signature(
    name: str, version: int, signature: str, offered: list[str]
) -> UnknownSignatureError:
    if signature == "explain":
        return NoExplanationsError(
            f"model {name!r} version {version} was exported before explanations existed and "
            f"has no 'explain' signature (it offers {', '.join(offered)}): re-export it with "
            "`make models` (or python -m training); it keeps serving classify and feature maps"
        )
    return UnknownSignatureError(
        f"model {name!r} version {version} has no signature {signature!r}; "
        f"it offers {', '.join(offered)}"
    )


class QueueFullError(InferenceError):
    """The queue holds ``max_queue`` images already; the caller should retry later."""


def queue_full(pending: int, limit: int) -> QueueFullError:
    return QueueFullError(f"{pending} images are queued or on their way; the limit is {limit}")


class DeadlineExceededError(InferenceError):
    """The request's deadline passed before its batch ran."""


class BatchSizeMismatchError(InferenceError, RuntimeError):
    """The model returned a different number of rows than it was given."""
