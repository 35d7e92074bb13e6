"""Settings from CONVBRIDGE_* variables, validated with messages that name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, describe_errors
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
