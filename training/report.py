"""models/REPORT.md: one row per model with size, accuracy and in-process latency."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from convbridge.card import ModelCard, read_card
from convbridge.layout import list_models, list_versions, version_dir
from convbridge.signatures import CLASSIFY

REPORT_NAME = "REPORT.md"


@dataclass(frozen=True)
class ReportRow:
    card: ModelCard
    size_bytes: int
    batch1_ms: float
    batch32_ms: float


def directory_size(path: Path) -> int:
    """Bytes in every file below ``path``."""
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def time_calls(call: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def signature_latency_ms(path: Path, card: ModelCard, batch: int, repeats: int) -> float:
    """Median milliseconds of one serving_default call at ``batch`` images."""
    signature = tf.saved_model.load(str(path)).signatures[CLASSIFY]
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch, *card.input.shape), dtype=np.uint8))
    samples = time_calls(lambda: signature(**{card.input.name: images}), repeats)
    return statistics.median(samples) * 1000.0


def collect(repository: Path) -> list[ReportRow]:
    """Measure the newest version of every model in the repository."""
    rows = []
    for name in list_models(repository):
        versions = list_versions(repository / name)
        if not versions:
            continue
        path = version_dir(repository, name, versions[-1])
        card = read_card(path)
        rows.append(
            ReportRow(
                card=card,
                size_bytes=directory_size(path),
                batch1_ms=signature_latency_ms(path, card, batch=1, repeats=50),
                batch32_ms=signature_latency_ms(path, card, batch=32, repeats=15),
            )
        )
    return rows


def format_report(rows: list[ReportRow]) -> str:
    """The markdown report: what each bridge costs and what it buys."""
    lines = [
        "# Bridge variants compared",
        "",
        f"Machine: {platform.machine()}, {_cpu_count()} CPU cores, TensorFlow {tf.__version__}. "
        "Accuracy and loss on the held-out split; latency is the median of in-process "
        "`serving_default` calls (`python -m training.report`).",
        "",
        "| model | version | bridge | parameters | accuracy | loss | SavedModel | "
        "batch 1 (ms) | batch 32 (ms) | batch 32 (images/s) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        card = row.card
        bridge = card.bridge + "".join(f", {k}={v}" for k, v in sorted(card.options.items()))
        lines.append(
            f"| {card.name} | {card.version} | {bridge} | {card.parameters:,} | "
            f"{card.evaluation.accuracy:.4f} | {card.evaluation.loss:.4f} | "
            f"{row.size_bytes / 1e6:.2f} MB | {row.batch1_ms:.2f} | {row.batch32_ms:.2f} | "
            f"{32_000 / row.batch32_ms:,.0f} |"
        )
    if rows:
        dataset = rows[0].card.dataset
        lines += [
            "",
            f"Data: {dataset.name} ({dataset.source}); {dataset.train_samples} training, "
            f"{dataset.validation_samples} validation, {dataset.test_samples} held-out images.",
        ]
    return "\n".join(lines) + "\n"


def write_report(repository: Path) -> Path:
    """Measure every model and write ``repository/REPORT.md``."""
    path = Path(repository) / REPORT_NAME
    path.write_text(format_report(collect(Path(repository))), encoding="utf-8")
    return path


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write REPORT.md for a model repository.")
    parser.add_argument("--models", type=Path, default=Path("models"), help="repository path")
    args = parser.parse_args()
    path = write_report(args.models)
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
