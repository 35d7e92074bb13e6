"""python -m service: check the settings, then supervise the executor and the front ends.

With CONVBRIDGE_WORKERS=0, everything runs in this one process instead (for debugging).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.settings import Settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (0.0.0.0 in containers)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port (default: CONVBRIDGE_GRPC_PORT, else 8500); 0 turns gRPC off",
    )
    args = parser.parse_args(argv)
    if args.grpc_port is not None:  # the front ends read it from their environment
        os.environ["CONVBRIDGE_GRPC_PORT"] = str(args.grpc_port)

    from service.logs import configure_logging
    from service.settings import Settings, describe_errors

    try:
        settings = Settings()
        settings.check_repository()
    except ValueError as error:
        print(f"convbridge: invalid settings: {describe_errors(error)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    workers = settings.front_ends()
    if workers > 0:
        from service.supervisor import supervise

        return supervise(settings, args.host, args.port, workers)
    if argv is None:  # this process's own command line, not a call from Python (tests)
        _start_again_with_malloc_tunables(settings)
    return _serve_in_one_process(settings, args.host, args.port)


def _start_again_with_malloc_tunables(settings: Settings) -> None:
    """In one process, this process is the executor: it wants the malloc tunables the split's
    executor has (``huge_pages``, ``malloc_arenas``: see ``supervisor.executor_env``).
    glibc reads its tunables only when a process starts, so the process starts again with
    them, under the same pid, before it has loaded anything. Huge pages there: a lone
    ``flatten`` request, interleaved with the naive server, 600 rounds: +0.14 -> +0.06 ms."""
    from service.supervisor import executor_env

    environment = dict(os.environ)
    wanted = executor_env(environment, settings)
    if wanted != environment:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, wanted)


def _serve_in_one_process(settings: Settings, host: str, port: int) -> int:
    """CONVBRIDGE_WORKERS=0: HTTP and the models in this one process (for debugging)."""
    from service.inference.runtime import DeviceError, configure_tensorflow, exit_past_stuck_calls

    try:
        runtime = configure_tensorflow(settings)
    except DeviceError as error:
        print(f"convbridge: {error}", file=sys.stderr)
        return 2

    import uvicorn

    from service.main import create_app
    from service.web.protocol import server_options

    # On SIGTERM uvicorn stops accepting, drains in-flight requests (and the lifespan drains
    # the batch queues), then re-raises the signal. A no-op handler underneath turns that
    # into a normal exit, status 0, which orchestrators read as a clean stop.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # uvicorn's own workers would each hold a copy of every model: the split shares one.
    grpc = (host, settings.grpc_port) if settings.grpc_port else None
    uvicorn.run(
        create_app(settings, runtime=runtime, grpc_address=grpc),
        host=host,
        port=port,
        loop="uvloop",
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        **server_options(settings),  # httptools with head limits, connection limits
    )
    exit_past_stuck_calls(0)


if __name__ == "__main__":
    sys.exit(main())
