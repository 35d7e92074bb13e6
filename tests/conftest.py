"""Session fixtures: real data, real exported SavedModels, shared across the whole run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from benchmarks.servers import ROOT, ServerProcess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Property-based tests: the same examples on every run by default, so CI is reproducible;
# HYPOTHESIS_PROFILE=explore searches afresh with ten times the examples.
settings.register_profile("repeatable", derandomize=True, deadline=None, print_blob=True)
settings.register_profile(
    "explore", max_examples=1000, deadline=None, print_blob=True, database=None
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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
    """All six variants trained by the real CLI with the demo settings (what `make models` does).

    ``CONVBRIDGE_TEST_MODELS=<folder>`` reuses a repository that `make models` (the same CLI)
    wrote, copied so tests can change it: for quick local runs; CI always trains.
    """
    repository = tmp_path_factory.mktemp("demo-models")
    reuse = os.environ.get("CONVBRIDGE_TEST_MODELS")
    if reuse:
        shutil.copytree(reuse, repository, dirs_exist_ok=True)
        return repository
    result = run_training(
        "--variant", "all", "--dataset", "digits", "--quiet", "--out", str(repository)
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return repository


@pytest.fixture(scope="session")
def gap_repository(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding only `gap`, for tests that start a server or engine on one model
    (faster to load); none of them changes it."""
    root = tmp_path_factory.mktemp("gap-only")
    shutil.copytree(demo_repository / "gap", root / "gap")
    return root


def start_server(repository: Path, log_path: Path, **env: str) -> ServerProcess:
    """`python -m service` on the given repository, on a free 127.0.0.1 port."""
    return ServerProcess(
        "service",
        ["--host", "127.0.0.1"],
        log_path,
        {"CONVBRIDGE_REPOSITORY": str(repository), **env},
    )


@pytest.fixture(scope="session")
def server(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """The service on the demo models, over a real socket, for the whole session."""
    instance = start_server(demo_repository, tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield instance.wait_ready()
    finally:
        instance.stop()


# Under CI=true a skipped test is a failure: a green run must mean every check ran. Only
# tests that need hardware CI cannot have (a GPU, a Docker engine) may skip there, and their
# reason says so.
ALLOWED_IN_CI = ("needs a GPU", "needs a Docker engine")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes") or not report.skipped:
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(allowed in reason for allowed in ALLOWED_IN_CI):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true ({reason}): install what it needs (.ci/run does), or mark "
        f"it with one of {ALLOWED_IN_CI} if CI cannot have it"
    )
