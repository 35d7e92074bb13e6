"""The floors a Python front end can reach: the same POST, read and answered, with no model.

``--kind fastapi``: a bare FastAPI route; ``--kind asgi``: a raw ASGI app. Both on uvicorn with
uvloop and httptools, as convbridge's front ends run. The benchmark compares against them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response

ANSWER = orjson.dumps({"top_k": [{"label": "7", "index": 7, "score": 0.99}]})


def fastapi_app() -> FastAPI:
    # FastAPI reads the handler's annotations from this module's globals: Request is there.
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(ANSWER, media_type="application/json")

    return app


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_server", description=__doc__)
    parser.add_argument("--kind", choices=("fastapi", "asgi"), default="fastapi")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    import uvicorn

    app = fastapi_app() if args.kind == "fastapi" else asgi_app
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
