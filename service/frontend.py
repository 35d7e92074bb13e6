"""python -m service.frontend: one HTTP front end of the split (started by the supervisor).

It parses HTTP (and gRPC, on CONVBRIDGE_GRPC_PORT), validates, decodes images and encodes
answers; the executor process runs the models. Every front end binds the same ports with
SO_REUSEPORT, so the kernel spreads new connections over them.
"""

from __future__ import annotations

import argparse
import gc
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket on host:port that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


# Allocations (net of frees) of tracked objects between two young collections: Python's
# default is 700. See settle_heap.
YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Freeze what start-up built, and collect the young generation far less often.

    What is imported and built by now lives as long as the process: frozen (as the executor
    freezes its own, :func:`freeze_startup_heap`), the collector's full passes no longer walk
    it. Those passes were the front end's tail (gap, c=64, one front end: p99 44 -> 22 ms, p50
    unchanged).

    A request frees nearly everything it makes by reference counting, but the collector
    counts allocations, not garbage: with 64 requests under way the count passed 700 every
    few requests, and each pass walked every live request's objects. At the default, one front
    end under `gap` c=64 spent 0.015-0.017 ms of its 0.34-0.38 ms of CPU a request in the
    collector (gc.callbacks), in 927 young, 84 middle and 7 full passes in 8 s; at
    YOUNG_THRESHOLD none ran in as long. Cyclic garbage still goes: at most one threshold's
    worth of objects waits for it.
    """
    from service.inference.runtime import freeze_startup_heap

    freeze_startup_heap()
    gc.set_threshold(YOUNG_THRESHOLD)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.frontend", description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", type=Path, required=True, help="the executor's socket")
    parser.add_argument("--arena", type=Path, help="folder for the shared-memory arena")
    parser.add_argument("--heartbeat", type=Path, help="file the supervisor watches for life")
    parser.add_argument(
        "--executor-heartbeat", type=Path, help="the executor's: not ready while it is silent"
    )
    args = parser.parse_args(argv)

    import uvicorn

    from service.executor.client import RemoteEngine
    from service.logs import configure_logging
    from service.main import create_app
    from service.metrics import Metrics
    from service.settings import Settings
    from service.web.protocol import server_options

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    engine = RemoteEngine(settings, args.socket, args.arena, args.executor_heartbeat)
    grpc = (args.host, settings.grpc_port) if settings.grpc_port else None
    app = create_app(settings, Metrics(process=False), engine=engine, grpc_address=grpc)
    sock = listening_socket(args.host, args.port)
    sock.listen(2048)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        **server_options(settings),  # httptools with head limits, connection limits
    )
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal: a no-op handler
    # underneath turns that into a normal exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    settle_heap()
    _beating_server(config, args.heartbeat).run(sockets=[sock])
    return 0


def _beating_server(config: uvicorn.Config, pulse: Path | None) -> uvicorn.Server:
    """uvicorn's server, whose loop beats for the supervisor once it serves."""
    import uvicorn

    from service.heartbeat import Heartbeat

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if pulse is not None:
                Heartbeat(pulse).start()

    return Server(config)


if __name__ == "__main__":
    sys.exit(main())
