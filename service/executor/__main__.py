"""python -m service.executor --socket PATH: the process that owns the models (one per device).

Started by the supervisor (``python -m service``), never by hand. It configures TensorFlow,
listens, then loads and warms every model while front ends connect; SIGTERM lets queued work
finish before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.inference.runtime import Runtime
    from service.settings import Settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.executor", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    parser.add_argument("--heartbeat", type=Path, help="file the supervisor watches for life")
    args = parser.parse_args(argv)

    from service.logs import configure_logging
    from service.settings import Settings

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)

    from service.inference.runtime import DeviceError, configure_tensorflow, exit_past_stuck_calls

    try:
        runtime = configure_tensorflow(settings)
    except DeviceError as error:
        print(f"convbridge executor: {error}", file=sys.stderr)
        return 2
    import uvloop

    # This process's loop only routes messages to the batchers: they may compute on it.
    runtime = dataclasses.replace(runtime, dedicated_loop=True)
    exit_past_stuck_calls(uvloop.run(_serve(settings, runtime, args.socket, args.heartbeat)))


async def _serve(
    settings: Settings, runtime: Runtime, socket_path: Path, pulse: Path | None
) -> int:
    from service.executor.server import ExecutorServer
    from service.heartbeat import Heartbeat
    from service.inference import Engine
    from service.metrics import Metrics

    engine = Engine(settings, Metrics(http=False), runtime)
    server = ExecutorServer(engine, socket_path)
    await server.start()
    if pulse is not None:
        Heartbeat(pulse, runtime.calls.oldest).start()
    starting = asyncio.create_task(engine.start(), name="load-models")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    starting.cancel()
    await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
