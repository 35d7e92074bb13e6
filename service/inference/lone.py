"""A model version's lone copy: the SavedModel loaded once more, with its own thread pool.

TensorFlow sizes its intra-op pool once per process, but a served model wants two sizes: one
core per batch under load (an op split across cores waits for its slower part, and the front
ends take CPU from any core at random), and every core for a request that arrives alone (one
core makes a lone `flatten` call 1.7 times slower). The eager signatures run the batches on a
one-thread pool; this copy, a TF1 session with its own pool (TF_OVERRIDE_GLOBAL_THREADPOOL,
set by :func:`~service.inference.runtime.configure_tensorflow`), runs the calls that find no
other under way. It costs a second copy of the weights. Its calls, compiled once by the
session, also skip the eager signature's argument handling and Session.run's (see LoneCopy). A
light model's ops are too short to share between cores: its copy gets one thread, and runs
the model's batches too, as the session keeps a whole call on that thread
(LoadedModel._add_lone_copy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Call = Callable[..., list[np.ndarray]]


class LoneCopy:
    """The signatures of the SavedModel at ``path``, in a session with ``threads`` intra-op
    threads; :meth:`run` takes and returns numpy arrays by the signatures' own names.

    Each signature is called through a callable the session compiles once
    (``CallableOptions``: its feeds and fetches by name), as Keras' TF1 backend did. A
    ``Session.make_callable`` with feeds goes through ``Session.run`` on every call, which
    builds a fetch handler and checks and converts each feed in Python: 0.11 ms of CPU a call
    on `gap` and 0.25 ms of wall on `flatten`, batch 1, in process.
    """

    def __init__(
        self, path: Path, signatures: tuple[str, ...], threads: int, spinning: bool
    ) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf.config_pb2 import CallableOptions

        self.threads = threads
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1
        )
        config.experimental.disable_thread_spinning = not spinning
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        with graph.as_default():
            meta = tf.compat.v1.saved_model.load(self._session, [tf.saved_model.SERVING], str(path))
        self._calls: dict[str, tuple[list[tuple[str, np.dtype[Any]]], list[str], Call]] = {}
        for name in signatures:
            definition: Any = meta.signature_def[name]
            inputs, outputs = sorted(definition.inputs), sorted(definition.outputs)
            options = CallableOptions(
                feed=[definition.inputs[key].name for key in inputs],
                fetch=[definition.outputs[key].name for key in outputs],
            )
            # The session's own compiled-callable API (TF_SessionMakeCallable); the public
            # make_callable only uses it for calls without feeds.
            call = self._session._make_callable_from_options(options)
            # Feeds must come in the graph's own dtypes (Session.run converted them).
            feeds = [
                (key, np.dtype(tf.as_dtype(definition.inputs[key].dtype).as_numpy_dtype))
                for key in inputs
            ]
            self._calls[name] = (feeds, outputs, call)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of ``signature``; blocking, on the calling thread and the copy's pool."""
        if not self._calls:
            raise RuntimeError("the lone copy is closed")
        feeds, outputs, call = self._calls[signature]
        arrays = [np.asarray(inputs[name], dtype) for name, dtype in feeds]
        return dict(zip(outputs, call(*arrays), strict=True))

    def close(self) -> None:
        """Free the session and its weights; the copy is unusable afterwards."""
        self._calls.clear()  # each callable is released with the session's handle still open
        self._session.close()


def fastest_ms(call: Callable[[], object], calls: int = 15, seconds: float = 0.3) -> float:
    """The fastest of ``call``'s timings in milliseconds, after 3 untimed calls: at least 5
    timed, then up to ``calls`` or ``seconds``.

    The fastest, not the median: a model loads while other work runs (the front ends
    starting, other servers warming up), which can only slow a call down, and a light model
    timed over 2 ms would lose its one-thread copy for its batches (LoadedModel). With four
    servers loading `gap` at once, the median of one came out at 1.62 ms against 0.76-0.89.
    """
    for _ in range(3):
        call()
    taken: list[float] = []
    until = time.monotonic() + seconds
    while len(taken) < 5 or (len(taken) < calls and time.monotonic() < until):
        started = time.perf_counter()
        call()
        taken.append(time.perf_counter() - started)
    return min(taken) * 1000
