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


class Server:
    """A real `python -m service` process on a free 127.0.0.1 port."""

    def __init__(self, repository: Path, log_path: Path, **env: str) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CONVBRIDGE_REPOSITORY": str(repository), **env},
        )

    def wait_ready(self, timeout: float = 180) -> Server:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server not ready in {timeout} s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def server(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """The service on the demo models, over a real socket, for the whole session."""
    instance = Server(demo_repository, tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield instance.wait_ready()
    finally:
        instance.stop()
