"""Settings from CONVBRIDGE_* variables, validated with messages that name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, describe_errors
from service.supervisor import executor_env
from tests.conftest import ROOT


def test_environment_variables_set_fields(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVBRIDGE_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("CONVBRIDGE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("CONVBRIDGE_CORS_ORIGINS", '["http://localhost:3000"]')
    settings = Settings()
    assert settings.repository == tmp_path and settings.max_batch_size == 16
    assert settings.cors_origins == ["http://localhost:3000"]
    settings.check_repository()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONVBRIDGE_DEVICE": "tpu"}, "CONVBRIDGE_DEVICE: Input should be 'auto', 'cpu' or 'gpu'"),
        ({"CONVBRIDGE_MAX_BATCH_SIZE": "0"}, "CONVBRIDGE_MAX_BATCH_SIZE"),
        (
            {"CONVBRIDGE_MAX_DELAY_MS": "900", "CONVBRIDGE_REQUEST_TIMEOUT_S": "0.5"},
            "must be shorter than request_timeout_s",
        ),
        ({"CONVBRIDGE_MAX_QUEUE_IMAGES": "4"}, "must be at least max_batch_size"),
    ],
)
def test_invalid_settings_are_described_in_one_line(monkeypatch, env, message) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as error:
        Settings()
    text = describe_errors(error.value)
    assert message in text and "\n" not in text


def test_missing_repository_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory: set CONVBRIDGE_REPOSITORY"):
        Settings(repository=tmp_path / "nope").check_repository()


def test_the_entrypoint_exits_2_with_one_line_for_bad_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CONVBRIDGE_REPOSITORY": str(tmp_path / "missing")},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "CONVBRIDGE_REPOSITORY" in result.stderr


def test_importing_the_service_is_cheap() -> None:
    code = (
        "import sys, service.main, service.__main__; "
        "print('tensorflow' in sys.modules, 'training' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_batch_sizes_per_device() -> None:
    settings = Settings(max_batch_size=24)
    assert settings.batch_sizes("gpu") == (1, 2, 4, 8, 16, 24)
    assert settings.batch_sizes("cpu") == tuple(range(1, 25))
    assert Settings(allowed_batch_sizes=[1, 8, 32]).batch_sizes("cpu") == (1, 8, 32)


@pytest.mark.parametrize("sizes", [[1, 8], [8, 1, 32], [0, 32], [4, 4, 32]])
def test_allowed_batch_sizes_must_be_increasing_and_end_at_the_maximum(sizes) -> None:
    with pytest.raises(ValidationError, match="must be increasing positive sizes ending at"):
        Settings(allowed_batch_sizes=sizes)


def test_padded_size() -> None:
    from service.inference.model import padded_size

    sizes = (1, 2, 4, 8, 32)
    assert [padded_size(n, sizes) for n in (1, 2, 3, 5, 8, 9, 32)] == [1, 2, 4, 8, 8, 32, 32]
    with pytest.raises(ValueError, match="larger than the largest allowed"):
        padded_size(33, sizes)


def test_the_executor_env_adds_malloc_tunables_and_keeps_the_operators() -> None:
    settings = Settings()
    assert settings.huge_pages and settings.malloc_arenas == 2
    env = executor_env({"PATH": "/bin"}, settings)
    assert env == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=2",
    }
    theirs = {"GLIBC_TUNABLES": "glibc.rtld.nns=2"}
    assert executor_env(theirs, settings)["GLIBC_TUNABLES"] == (
        "glibc.rtld.nns=2:glibc.malloc.hugetlb=1:glibc.malloc.arena_max=2"
    )
    # Their own tunables win, MALLOC_ARENA_MAX included, and the settings turn them off.
    own = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=8:glibc.malloc.hugetlb=0"}
    assert executor_env(own, settings) == own
    arenas = {"MALLOC_ARENA_MAX": "4"}
    assert executor_env(arenas, settings) == {**arenas, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    fewer = Settings(huge_pages=False, malloc_arenas=1)
    assert executor_env({}, fewer) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
    assert executor_env({"PATH": "/bin"}, Settings(huge_pages=False, malloc_arenas=0)) == {
        "PATH": "/bin"
    }
