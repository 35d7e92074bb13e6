"""python -m benchmarks: the in-process ceiling of a model's serving_default signature.

The HTTP benchmark against this ceiling comes with the batching work; this part stands alone:
it tells what the SavedModel itself can do on this machine at each batch size.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--model", default="flatten")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per batch size")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from convbridge.card import read_card
    from convbridge.layout import list_versions, version_dir
    from training.report import time_calls

    versions = list_versions(args.models / args.model)
    if not versions:
        print(
            f"error: no versions of {args.model!r} in {args.models}/ (run make models)",
            file=sys.stderr,
        )
        return 2
    path = version_dir(args.models, args.model, versions[-1])
    card = read_card(path)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    rng = np.random.default_rng(0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}")
    print(f"command: python -m benchmarks {' '.join(argv or sys.argv[1:])}")
    print(f"model: {args.model} v{versions[-1]}, input {card.input.shape}\n")
    print(f"{'batch':>6}{'median ms':>12}{'images/s':>12}{'vs batch 1':>12}")
    baseline = None
    for batch in (int(b) for b in args.batches.split(",")):
        images = tf.constant(rng.integers(0, 256, (batch, *card.input.shape), dtype=np.uint8))
        call = functools.partial(signature, images=images)
        once = time_calls(call, repeats=3)
        repeats = max(5, int(args.seconds / max(statistics.median(once), 1e-4)))
        median = statistics.median(time_calls(call, repeats, 0))
        rate = batch / median
        baseline = baseline or rate
        print(f"{batch:>6}{median * 1000:>12.2f}{rate:>12,.0f}{rate / baseline:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
