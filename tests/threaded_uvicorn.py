"""A uvicorn server on 127.0.0.1 in a thread of the test process: for ASGI pieces that need a
real server and a real socket, but no model and no second process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from benchmarks.servers import free_port


@contextmanager
def uvicorn_in_thread(app: Any, **options: Any) -> Iterator[int]:
    """Serve ``app`` (uvicorn.Config's ``options``) until the block ends; yields the port."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)  # the interval between two looks at the server's state
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
