"""`TF_CONFIG`: two workers on 127.0.0.1 train one model together with
MultiWorkerMirroredStrategy, as the README says (the same command on every worker).

The oracle: each worker reads its own shard of every batch (tf.data's automatic sharding), so
the two would end with different weights unless their gradients were all-reduced at each
step; equal weights, from two processes that both finished, show the collectives ran. The
cards say which strategy trained and over how many replicas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.servers import ROOT, free_port
from convbridge.card import read_card
from convbridge.layout import list_versions, version_dir

pytestmark = pytest.mark.slow


def test_two_workers_train_one_model(tmp_path) -> None:
    import tensorflow as tf

    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "",
        }
        command = [
            sys.executable,
            "-m",
            "training",
            "--variant",
            "gap",
            "--dataset",
            "digits",
            "--limit",
            "400",
            "--epochs",
            "2",
            "--seed",
            "3",
            "--quiet",
            "--no-report",
            "--out",
            str(tmp_path / f"worker{index}"),
        ]
        log = (tmp_path / f"worker{index}.log").open("w")
        workers.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    try:
        codes = [worker.wait(timeout=600) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    logs = [(tmp_path / f"worker{index}.log").read_text() for index in range(2)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)

    folders = [tmp_path / f"worker{index}" / "gap" for index in range(2)]
    exported = [version_dir(folder.parent, "gap", list_versions(folder)[-1]) for folder in folders]
    for path in exported:
        card = read_card(path)
        assert (card.training.strategy, card.training.replicas) == (
            "MultiWorkerMirroredStrategy",
            2,
        )
    weights = [
        [variable.numpy() for variable in tf.saved_model.load(str(path)).variables]
        for path in exported
    ]
    assert len(weights[0]) == len(weights[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
