"""The lone copy (a model's second load, in a TF1 session with its own pool) against the
eager signatures it stands in for, and the count that picks between them."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client import CollectorRegistry

from convbridge.card import read_card
from convbridge.signatures import CLASS_INDEX, CLASSIFY, EXPLAIN, PROBABILITIES
from service.inference import model as model_module
from service.inference.lone import LoneCopy
from service.inference.model import LoadedModel
from service.inference.runtime import CallCount, Runtime
from service.inference.signatures import served_signatures
from service.metrics import Metrics
from service.settings import Settings


@pytest.mark.parametrize("variant", ["flatten", "residual_gap"])
def test_the_lone_copy_answers_like_the_eager_signatures(demo_repository, variant) -> None:
    path = demo_repository / variant / "1"
    card = read_card(path)
    signatures = served_signatures(card)
    eager = tf.saved_model.load(str(path)).signatures
    copy = LoneCopy(path, signatures, threads=2, spinning=False)
    try:
        images = np.random.default_rng(3).integers(0, 256, (3, *card.input.shape), np.uint8)
        for signature in signatures:
            inputs = {card.input.name: images}
            if signature == EXPLAIN:
                inputs[CLASS_INDEX] = np.array([-1, 0, 7], np.int32)
            expected = eager[signature](**{k: tf.constant(v) for k, v in inputs.items()})
            got = copy.run(signature, inputs)
            assert set(got) == set(expected), signature
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-5)
    finally:
        copy.close()
    with pytest.raises(RuntimeError):  # closed: its session and weights are gone
        copy.run(signatures[0], {card.input.name: images})


def test_the_lone_copy_converts_feeds_to_the_graphs_dtypes(demo_repository) -> None:
    """Its compiled callables take the graph's dtypes only; run converts as Session.run did
    (a class index as int64, images as int32 values in range)."""
    path = demo_repository / "flatten" / "1"
    card = read_card(path)
    copy = LoneCopy(path, served_signatures(card), threads=1, spinning=False)
    try:
        images = np.random.default_rng(5).integers(0, 256, (2, *card.input.shape), np.uint8)
        exact = copy.run(
            EXPLAIN, {card.input.name: images, CLASS_INDEX: np.array([3, -1], np.int32)}
        )
        wide = copy.run(
            EXPLAIN,
            {card.input.name: images.astype(np.int32), CLASS_INDEX: np.array([3, -1], np.int64)},
        )
    finally:
        copy.close()
    assert set(wide) == set(exact)
    for name, value in exact.items():
        np.testing.assert_array_equal(wide[name], value)


def test_a_call_is_alone_only_while_no_other_is_under_way() -> None:
    calls = CallCount()
    inside, leave = threading.Event(), threading.Event()
    seen: list[bool] = []

    def long_call() -> None:
        with calls.call() as alone:
            seen.append(alone)
            inside.set()
            leave.wait(5)

    worker = threading.Thread(target=long_call)
    worker.start()
    assert inside.wait(5)
    with calls.call() as alone:  # beside the long call
        seen.append(alone)
    leave.set()
    worker.join()
    with calls.call() as alone:  # after it
        seen.append(alone)
    assert seen == [True, False, True]


def test_a_model_whose_copy_cannot_load_is_served_without_it(
    gap_repository, digits, monkeypatch, caplog
) -> None:
    """The copy is an optimisation: when TF1's loader cannot read a SavedModel the model still
    loads, its lone calls on the eager signatures, and the log says why."""

    def unreadable(*args: object, **kwargs: object) -> LoneCopy:
        raise OSError("TF1's loader found no MetaGraph")

    monkeypatch.setattr(model_module, "LoneCopy", unreadable)
    path = gap_repository / "gap" / "1"
    loaded = _load(path, lone_threads=2)
    try:
        assert "no lone copy (TF1's loader found no MetaGraph)" in caplog.text
        # No copy: the eager signature itself answers, to the last bits.
        _assert_answers_like_eager(loaded, path, digits.test.images[:2], rtol=1e-7, atol=1e-6)
    finally:
        asyncio.run(loaded.close())


@pytest.mark.parametrize("variant", ["gap", "flatten"])
def test_a_copy_spreads_over_every_core_only_a_call_long_enough_to_share(
    demo_repository, digits, caplog, variant
) -> None:
    """A call alone is timed on one core when the model loads; one shorter than SPLIT_MIN_MS
    gets a copy on one thread, which runs the model's batches too, and the copy answers as
    the eager signature either way."""
    path = demo_repository / variant / "1"
    with caplog.at_level(logging.INFO, "convbridge.models"):
        loaded = _load(path, lone_threads=2)
    try:
        one_core_ms = loaded.one_core_ms
        assert one_core_ms is not None and one_core_ms > 0
        light = one_core_ms < model_module.SPLIT_MIN_MS
        assert loaded.lone_threads == (1 if light else 2)
        assert loaded.batches_on_copy == light
        line = re.search(
            rf"{variant} v1: a call alone takes ([\d.]+) ms on one core: its lone copy gets "
            rf"{loaded.lone_threads} thread\(s\)( and runs its batches too)?$",
            caplog.text,
            re.MULTILINE,
        )
        assert line is not None, caplog.text
        assert float(line[1]) == round(one_core_ms, 2)
        assert bool(line[2]) == light
        _assert_answers_like_eager(loaded, path, digits.test.images[:2])  # alone: the copy
    finally:
        asyncio.run(loaded.close())  # its batchers never started: the pool and the copy go


@pytest.mark.parametrize("light", [True, False])
def test_a_batch_runs_on_the_copy_only_for_a_light_model(
    gap_repository, digits, monkeypatch, light
) -> None:
    """A call that starts beside another (a batch under load) runs on a light model's copy,
    and on a heavy model's eager signature: whichever runs it, the answer is the model's.
    SPLIT_MIN_MS set past or below any call makes `gap` either."""
    monkeypatch.setattr(model_module, "SPLIT_MIN_MS", math.inf if light else 0.0)
    path = gap_repository / "gap" / "1"
    loaded = _load(path, lone_threads=2)
    assert loaded.batches_on_copy == light
    assert loaded.lone_threads == (1 if light else 2)
    ran: list[str] = []
    copy, eager = loaded._lone, loaded._call_eager
    assert copy is not None
    # Spies on the two paths: each still makes its real call.
    monkeypatch.setattr(copy, "run", lambda *args: ran.append("copy") or LoneCopy.run(copy, *args))
    monkeypatch.setattr(loaded, "_call_eager", lambda *args: ran.append("eager") or eager(*args))
    try:
        with loaded._runtime.calls.call() as alone:  # another call under way
            assert alone
            _assert_answers_like_eager(loaded, path, digits.test.images[:2])
        _assert_answers_like_eager(loaded, path, digits.test.images[:1])  # alone
        assert ran == ["copy" if light else "eager", "copy"]
    finally:
        asyncio.run(loaded.close())


def test_a_copy_asked_for_on_one_thread_keeps_it(gap_repository, caplog) -> None:
    """lone_threads=1: the copy has one thread whatever its calls take; the call alone is
    still timed, as it decides whether the copy runs the batches too."""
    with caplog.at_level(logging.INFO, "convbridge.models"):
        loaded = _load(gap_repository / "gap" / "1", lone_threads=1)
    try:
        assert loaded.lone_threads == 1
        assert loaded.one_core_ms is not None
        assert loaded.batches_on_copy == (loaded.one_core_ms < model_module.SPLIT_MIN_MS)
        assert "gap v1: a call alone takes" in caplog.text
    finally:
        asyncio.run(loaded.close())


def _load(path: Path, lone_threads: int) -> LoadedModel:
    """The model at ``path`` loaded as the executor loads it on a CPU, with this copy."""
    settings = Settings(repository=path.parent.parent, max_batch_size=2)
    runtime = Runtime("/CPU:0", "cpu", "CPU", lone_threads=lone_threads)
    return LoadedModel.load(path, read_card(path), runtime, settings, Metrics(CollectorRegistry()))


def _assert_answers_like_eager(
    loaded: LoadedModel, path: Path, images: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """A call alone (on the copy when there is one) answers as the SavedModel's own signature,
    within ``rtol`` and ``atol`` (a copy's session may sum in another order)."""
    eager = tf.saved_model.load(str(path)).signatures[CLASSIFY]
    expected = eager(images=tf.constant(images))[PROBABILITIES].numpy()
    got = loaded.run(CLASSIFY, images)[PROBABILITIES]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
