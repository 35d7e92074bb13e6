"""One settings object, read from CONVBRIDGE_* environment variables and checked at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; ``CONVBRIDGE_<FIELD>`` sets one (CONVBRIDGE_DEVICE=cpu)."""

    model_config = SettingsConfigDict(env_prefix="CONVBRIDGE_", extra="forbid")

    repository: Path = Field(Path("models"), description="model repository: <name>/<version>/")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="auto: GPU when present")
    gpu_memory_limit_mb: int | None = Field(None, ge=64, description="cap GPU memory per process")
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="TensorFlow intra-op threads of the batches; 0: 1 on CPU when lone_threads "
        "gives each model a lone-request copy, else TF's default (one per core)",
    )
    inter_op_threads: int = Field(0, ge=0, description="TensorFlow inter-op threads; 0: TF default")
    thread_spinning: bool = Field(
        False,
        description="let TensorFlow's idle pool threads spin before they sleep (TF's default): "
        "off, they leave the cores to the front ends and the executor's loop",
    )

    max_batch_size: int = Field(32, ge=1, le=1024, description="images per model call")
    max_delay_ms: float = Field(2.0, ge=0, le=1000, description="longest wait to fill a batch")
    allowed_batch_sizes: list[int] = Field(
        default_factory=list,
        description="batch sizes the model is called with (batches are padded up to one); "
        "empty: powers of two on GPU, every size on CPU; the last must be max_batch_size",
    )
    batch_threads: int | None = Field(
        None,
        ge=1,
        le=16,
        description="batches of one model that may run at once; default: one per core on CPU "
        "with lone-request copies (each batch on one core), else 1",
    )
    lone_threads: int | None = Field(
        None,
        ge=0,
        le=256,
        description="CPU only: each model is loaded a second time with its own pool of this "
        "many intra-op threads, and a call that finds no other under way runs there on every "
        "core, while calls under load run on one core each (a model whose call alone takes "
        "under 2 ms on one core, timed as it loads, gets a copy on one thread); 0: no copy "
        "(half the weights' memory; TensorFlow's threading as configured); default: one per "
        "core (0 on one core)",
    )
    huge_pages: bool = Field(
        True,
        description="the executor's heap (the models' weights; with CONVBRIDGE_WORKERS=0 the one "
        "process's) in transparent huge pages, "
        "through glibc's malloc.hugetlb tunable (kernels whose THP mode is madvise or always); "
        "a model that streams its weights per call then misses the TLB less",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        le=1024,
        description="glibc malloc arenas of the executor (the one process with "
        "CONVBRIDGE_WORKERS=0), through glibc's malloc.arena_max tunable; 0: glibc's default "
        "(eight per core), whose spare arenas let reloads grow the heap by about 200 MiB "
        "before it levels off",
    )
    max_queue_images: int = Field(512, ge=1, description="queued images per model; then 503")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="deadline of one request")
    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding images")
    workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="HTTP front-end processes feeding one model executor; 0: everything in one "
        "process (for debugging); default: one per core",
    )
    hang_timeout_s: float = Field(
        30.0,
        ge=2,
        le=3600,
        description="the supervisor kills and restarts a front end or the executor whose event "
        "loop has not turned, or the executor whose model call has not returned, for this long "
        "(hung)",
    )
    load_timeout_s: float = Field(
        120.0,
        ge=1,
        le=86400,
        description="a version that has not loaded and warmed up within this long is marked "
        "failed, so the other models and versions go on loading and serving; what its stuck "
        "load returns later is dropped",
    )
    shm_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="shared memory per front end for tensors on their way to and from the "
        "executor (a request that does not fit sends them over the socket)",
    )

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body")
    max_image_pixels: int = Field(25_000_000, ge=64, description="largest decoded image, pixels")
    max_images_per_request: int = Field(64, ge=1, description="images in one classify request")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="a request body must arrive within this; then 408"
    )
    body_min_bytes_per_s: int = Field(
        1024,
        ge=0,
        description="slowest body accepted, after a 2 s grace: slower uploads get 408 (0: off)",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a request's line and headers must arrive within this"
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, le=600, description="an idle keep-alive connection is closed after this"
    )
    max_connections: int = Field(
        1024, ge=1, description="open connections per front end; past it, 503 at once"
    )
    max_url_bytes: int = Field(8192, ge=256, description="longest URL; past it, 414")
    max_header_line_bytes: int = Field(
        8192, ge=256, description="longest header (name and value); past it, 431"
    )
    max_header_bytes: int = Field(
        32768, ge=1024, description="request line and headers together; past it, 431"
    )
    max_header_count: int = Field(100, ge=8, description="headers in one request; past it, 431")

    poll_interval_s: float = Field(
        0.0, ge=0, le=3600, description="repository polling for new versions; 0 turns it off"
    )
    keep_versions: int = Field(1, ge=1, le=100, description="newest ready versions kept loaded")
    pinned_versions: dict[str, list[int]] = Field(
        default_factory=dict, description='versions kept loaded whatever their age: {"gap": [1]}'
    )
    require_all_models: bool = Field(
        False, description="/readyz waits for every model, even one that failed to load"
    )
    api_token: SecretStr | None = Field(
        None, description="when set, every route but health and metrics needs this bearer token"
    )
    grpc_port: int = Field(
        8500,
        ge=0,
        le=65535,
        description="gRPC port (TF Serving's and KServe v2's services, grpc.health.v1) on the "
        "HTTP host; 0 turns gRPC off",
    )
    grpc_max_concurrent_streams: int = Field(
        256, ge=1, description="gRPC calls one connection may have open at once"
    )
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(
        False,
        description="one line per HTTP request on the convbridge.access logger (at info, in "
        "log_format); off, as in TF Serving and Triton: a line a request costs a light "
        "model 3-12% of its throughput",
    )

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.max_delay_ms / 1000.0 >= self.request_timeout_s:
            raise ValueError(
                f"max_delay_ms ({self.max_delay_ms}) must be shorter than request_timeout_s "
                f"({self.request_timeout_s} s)"
            )
        sizes = self.allowed_batch_sizes
        if sizes and (
            sizes != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != self.max_batch_size
        ):
            raise ValueError(
                f"allowed_batch_sizes {sizes} must be increasing positive sizes ending at "
                f"max_batch_size ({self.max_batch_size})"
            )
        if self.max_queue_images < self.max_batch_size:
            raise ValueError(
                f"max_queue_images ({self.max_queue_images}) must be at least max_batch_size "
                f"({self.max_batch_size})"
            )
        return self

    def batch_sizes(self, device_kind: str) -> tuple[int, ...]:
        """The batch sizes models are called with on ``device_kind`` ("cpu" or "gpu")."""
        if self.allowed_batch_sizes:
            return tuple(self.allowed_batch_sizes)
        if device_kind == "gpu":
            # A GPU compiles kernels per shape: a few padded sizes beat every size.
            powers = [1 << i for i in range(12) if 1 << i < self.max_batch_size]
            return (*powers, self.max_batch_size)
        # On CPU the signature's batch axis is dynamic and padding would waste compute.
        return tuple(range(1, self.max_batch_size + 1))

    def front_ends(self) -> int:
        """How many front-end processes to run; 0 means one process for everything.

        By default one per core. On two cores, one front end answers a light model (gap, c=64)
        9% faster than two (3,128 against 2,869 req/s: three processes share two cores), but
        under overload the HTTP side is the bottleneck and two refuse twice as fast: at four
        times capacity, with one front end some clients waited over 30 s for their 503.
        On a GPU machine the front ends are what keeps the device fed: see the README.
        """
        if self.workers is not None:
            return self.workers
        return max(1, os.cpu_count() or 1)

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
