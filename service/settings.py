"""One settings object, read from CONVBRIDGE_* environment variables and checked at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; ``CONVBRIDGE_<FIELD>`` sets one (CONVBRIDGE_DEVICE=cpu)."""

    model_config = SettingsConfigDict(env_prefix="CONVBRIDGE_", extra="forbid")

    repository: Path = Field(Path("models"), description="model repository: <name>/<version>/")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto: GPU when present")
    gpu_memory_limit_mb: int | None = Field(None, ge=64, description="cap GPU memory per process")
    intra_op_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; 0: TF default")
    inter_op_threads: int = Field(0, ge=0, description="TensorFlow inter-op threads; 0: TF default")

    max_batch_size: int = Field(32, ge=1, le=1024, description="images per model call")
    max_delay_ms: float = Field(2.0, ge=0, le=1000, description="longest wait to fill a batch")
    max_queue_images: int = Field(512, ge=1, description="queued images per model; then 503")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="deadline of one request")
    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding images")

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body")
    max_image_pixels: int = Field(25_000_000, ge=64, description="largest decoded image, pixels")
    max_images_per_request: int = Field(64, ge=1, description="images in one classify request")

    require_all_models: bool = Field(
        False, description="/readyz waits for every model, even one that failed to load"
    )
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.max_delay_ms / 1000.0 >= self.request_timeout_s:
            raise ValueError(
                f"max_delay_ms ({self.max_delay_ms}) must be shorter than request_timeout_s "
                f"({self.request_timeout_s} s)"
            )
        if self.max_queue_images < self.max_batch_size:
            raise ValueError(
                f"max_queue_images ({self.max_queue_images}) must be at least max_batch_size "
                f"({self.max_batch_size})"
            )
        return self

    def check_repository(self) -> None:
        """Raise ValueError unless the repository folder exists."""
        if not self.repository.is_dir():
            raise ValueError(
                f"model repository {str(self.repository)!r} is not a directory: set "
                "CONVBRIDGE_REPOSITORY or run `make models`"
            )


def describe_errors(error: Exception) -> str:
    """One line per invalid setting, naming its environment variable."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        name = f"CONVBRIDGE_{field.upper()}" if field else "settings"
        lines.append(f"{name}: {item['msg']}")
    return "; ".join(lines)
