"""Dockerfile and compose files: what can be checked without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import httpx
import pytest
import yaml

from benchmarks.servers import ROOT, ServerProcess, free_port
from service.settings import Settings

COMPOSE = shutil.which("docker-compose")


def compose_config(*files: str) -> dict:
    if COMPOSE is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    args = [COMPOSE]
    for name in files:
        args += ["-f", str(ROOT / name)]
    result = subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "convbridge"},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def compose_environment(path: str = "docker-compose.yml") -> dict[str, str]:
    """The api service's environment as compose resolves it with nothing set: each
    ``${NAME:-default}`` is its default. Read with PyYAML, so no docker-compose is needed."""
    environment = yaml.safe_load((ROOT / path).read_text())["services"]["api"]["environment"]
    resolved = {}
    for key, value in environment.items():
        if value is None:  # passed through from the host's environment only when set there
            continue
        text = str(value)
        assert "$" not in _DEFAULTED.sub("", text), f"{key}: only ${{NAME:-default}} is read here"
        resolved[key] = _DEFAULTED.sub(lambda match: match[2], text)
    return resolved


def test_the_environment_reader_agrees_with_docker_compose(monkeypatch) -> None:
    for name in ("CONVBRIDGE_GPU_MEMORY_LIMIT_MB", "CONVBRIDGE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    resolved = compose_config("docker-compose.yml")["services"]["api"]["environment"]
    assert compose_environment() == {
        key: str(value) for key, value in resolved.items() if value is not None
    }


def test_compose_sets_every_setting(monkeypatch) -> None:
    """Every CONVBRIDGE_* variable appears in the api's environment, with the service's own
    default unless compose chooses another on purpose."""
    listed = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"][
        "environment"
    ]
    expected = {f"CONVBRIDGE_{name.upper()}" for name in Settings.model_fields}
    assert set(listed) == expected
    chosen = {  # compose's own choices, each for a reason its comments give
        "CONVBRIDGE_REPOSITORY",
        "CONVBRIDGE_WORKERS",
        "CONVBRIDGE_LOG_FORMAT",
        "CONVBRIDGE_POLL_INTERVAL_S",
    }
    resolved = compose_environment()
    for name, field in Settings.model_fields.items():
        key = f"CONVBRIDGE_{name.upper()}"
        if key in chosen or key not in resolved:
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        monkeypatch.setenv(key, resolved[key])
        assert getattr(Settings(), name) == default, (key, resolved[key], default)


def dockerfile_instruction(keyword: str, stage: str = "runtime") -> str:
    """The text of the last ``keyword`` instruction in ``stage`` (continuations joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    body = next(s for s in stages if re.match(rf"\S+ AS {stage}\s", s))
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith(keyword + " ")]
    assert lines, f"no {keyword} in stage {stage}"
    return lines[-1][len(keyword) + 1 :].strip()


def test_compose_file_defines_the_stack() -> None:
    config = compose_config("docker-compose.yml")
    services = config["services"]
    assert set(services) == {"trainer", "api", "prometheus", "grafana"}
    api = services["api"]
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert api["volumes"] == ["models:/models:ro"]  # the api only reads the repository
    assert api["healthcheck"]["test"][-3:] == ["python", "-m", "service.healthcheck"]
    assert api["restart"] == "unless-stopped"
    assert api["deploy"]["resources"]["limits"]["memory"]
    assert "--skip-if-present" in services["trainer"]["command"]
    assert "reservations" not in api["deploy"]["resources"]  # no GPU needed by default


def test_compose_settings_are_valid_service_settings(monkeypatch) -> None:
    environment = compose_environment()
    for key, value in environment.items():
        assert key.startswith("CONVBRIDGE_")
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert str(settings.repository) == "/models" and settings.log_format == "json"


def test_gpu_override_reserves_an_nvidia_gpu() -> None:
    api = compose_config("docker-compose.yml", "docker-compose.gpu.yml")["services"]["api"]
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert api["environment"]["CONVBRIDGE_DEVICE"] == "gpu"
    assert api["build"]["args"]["VARIANT"] == "gpu"


def test_dockerfile_runs_the_same_entrypoint_as_make_serve() -> None:
    command = json.loads(dockerfile_instruction("CMD"))
    assert command[:3] == ["python", "-m", "service"]
    assert "-m service --host" in (ROOT / "Makefile").read_text()
    assert dockerfile_instruction("USER") == "10001"
    assert "service.healthcheck" in dockerfile_instruction("HEALTHCHECK")
    assert dockerfile_instruction("USER", stage="trainer") == "10001"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "models", ".git", "tests"} <= set(ignored)


@pytest.mark.slow
def test_the_container_command_serves_on_the_host(demo_repository, tmp_path) -> None:
    """The image's CMD and the api's compose environment, run here with a temp models dir."""
    command = json.loads(dockerfile_instruction("CMD"))
    args = command[3:]
    args[args.index("--host") + 1] = "127.0.0.1"
    port_index = args.index("--port")
    del args[port_index : port_index + 2]  # ServerProcess picks a free port
    environment = compose_environment()  # no docker-compose needed to run the command
    models = tmp_path / "models"
    shutil.copytree(demo_repository / "gap", models / "gap")
    env = {k: str(v) for k, v in environment.items()} | {"CONVBRIDGE_REPOSITORY": str(models)}
    server = ServerProcess("service", args, tmp_path / "server.log", env)
    try:
        server.wait_ready(timeout=120)
        assert httpx.get(f"{server.url}/models").json()["models"][0]["name"] == "gap"
        check = [sys.executable, "-m", "service.healthcheck"]
        healthy = subprocess.run(
            check,
            capture_output=True,
            timeout=30,
            env={**os.environ, "CONVBRIDGE_HEALTHCHECK_URL": f"{server.url}/readyz"},
        )
        assert healthy.returncode == 0
        # CONVBRIDGE_LOG_FORMAT=json from compose: the service's own log lines are JSON objects.
        ours = [line for line in server.log().splitlines() if line.startswith('{"time"')]
        assert any(json.loads(line)["logger"] == "convbridge.repository" for line in ours)
    finally:
        server.stop()
    closed = f"http://127.0.0.1:{free_port()}/readyz"
    unhealthy = subprocess.run(
        check,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CONVBRIDGE_HEALTHCHECK_URL": closed},
    )
    assert unhealthy.returncode == 1 and "healthcheck" in unhealthy.stderr
