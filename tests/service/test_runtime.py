"""TensorFlow's set-up for serving, each case in a fresh interpreter (TensorFlow reads its
configuration once, when its eager context initialises)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.servers import ROOT
from service.inference.runtime import usable_cores

# Configure as the executor does, run one op (the context initialises with the config it
# has then), and report what the initialised context was given.
_PROBE = """
import json, logging, os, sys
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
import tensorflow as tf
from service.inference.runtime import configure_tensorflow
from service.settings import Settings
if sys.argv[1] == "late":
    tf.constant(1) + 1
runtime = configure_tensorflow(Settings())
tf.constant(1) + 1
from tensorflow.python.eager import context
config = context.context().config
print(json.dumps({
    "disable_thread_spinning": config.experimental.disable_thread_spinning,
    "intra_op": config.intra_op_parallelism_threads,
    "lone_threads": runtime.lone_threads,
    "batch_threads": runtime.batch_threads,
    "own_pools": os.environ.get("TF_OVERRIDE_GLOBAL_THREADPOOL"),
}))
"""


def _without_settings(environ: os._Environ[str]) -> dict[str, str]:
    """The environment without CONVBRIDGE_* variables (each case sets its own) and without
    what configure_tensorflow sets, which an earlier test in this process may have set."""
    return {
        key: value
        for key, value in environ.items()
        if not key.startswith("CONVBRIDGE_") and key != "TF_OVERRIDE_GLOBAL_THREADPOOL"
    }


def _probe(when: str, **env: str) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, when],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_without_settings(os.environ), "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize(
    ("env", "disabled"),
    [({}, True), ({"CONVBRIDGE_THREAD_SPINNING": "true"}, False)],
    ids=["default-off", "spinning-on"],
)
def test_thread_spinning_reaches_the_eager_context(env: dict[str, str], disabled: bool) -> None:
    seen, _ = _probe("first", CONVBRIDGE_LONE_THREADS="0", CONVBRIDGE_INTRA_OP_THREADS="3", **env)
    assert (seen["disable_thread_spinning"], seen["intra_op"]) == (disabled, 3)


CORES = len(os.sched_getaffinity(0))  # the affinity alone
USABLE = usable_cores()  # what the defaults follow: the affinity, capped by a CPU quota


@pytest.mark.skipif(USABLE < 2, reason="the lone copy is on by default only with 2+ cores")
def test_by_default_batches_take_one_core_each_and_a_lone_call_every_core() -> None:
    seen, _ = _probe("first", CONVBRIDGE_DEVICE="cpu")
    assert seen == {
        "disable_thread_spinning": True,
        "intra_op": 1,  # a batch on one core
        "lone_threads": USABLE,  # the lone copy's pool: every core
        "batch_threads": USABLE,  # one batch per core at once
        "own_pools": "1",  # the copies' sessions get their own pools
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONVBRIDGE_LONE_THREADS": "0"}, (0, 0, 1, None)),
        ({"CONVBRIDGE_LONE_THREADS": "3", "CONVBRIDGE_BATCH_THREADS": "2"}, (1, 3, 2, "1")),
        ({"CONVBRIDGE_LONE_THREADS": "2", "CONVBRIDGE_INTRA_OP_THREADS": "2"}, (2, 2, USABLE, "1")),
    ],
    ids=["no-copy: TF defaults, one batch", "explicit batch threads", "explicit intra-op"],
)
def test_explicit_thread_settings_win(env: dict[str, str], expected: tuple[object, ...]) -> None:
    seen, _ = _probe("first", CONVBRIDGE_DEVICE="cpu", **env)
    keys = ("intra_op", "lone_threads", "batch_threads", "own_pools")
    assert tuple(seen[key] for key in keys) == expected


def test_a_context_already_running_keeps_its_threads_and_says_so() -> None:
    seen, log = _probe("late")
    assert seen["disable_thread_spinning"] is False
    assert (seen["intra_op"], seen["lone_threads"], seen["batch_threads"]) == (0, 0, 1)
    assert "already initialised" in log


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", CORES), ("50000 100000", 1), ("150000 100000", min(CORES, 2)), ("", CORES)],
    ids=["no quota", "half a core", "1.5 cores", "unreadable"],
)
def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path, cpu_max: str, expected: int) -> None:
    """docker --cpus and Kubernetes CPU limits set a quota, not an affinity: the thread
    defaults follow the quota, rounded up."""
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    assert usable_cores(path) == expected
    assert usable_cores(tmp_path / "absent") == CORES
