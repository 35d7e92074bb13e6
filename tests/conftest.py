"""Session fixtures: real data, real exported SavedModels, shared across the whole run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]


def run_training(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``python -m training`` as a user would, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.fixture(scope="session")
def digits():
    """The offline digits data set with its seeded held-out split."""
    from training.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All six variants trained by the real CLI with the demo settings (what `make models` does)."""
    repository = tmp_path_factory.mktemp("demo-models")
    result = run_training(
        "--variant", "all", "--dataset", "digits", "--quiet", "--out", str(repository)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return repository
