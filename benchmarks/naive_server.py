"""The baseline: the usual FastAPI tutorial, one model call per request inside the handler.

python -m benchmarks.naive_server --model models/flatten/1 --port 8100
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

from fastapi import FastAPI, Request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_app(model_path: str) -> FastAPI:
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from convbridge.card import read_card

    card = read_card(Path(model_path))
    serve = tf.saved_model.load(model_path).signatures["serving_default"]
    height, width, _ = card.input.shape
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, object]:
        image = Image.open(io.BytesIO(await request.body())).convert(card.input.channels)
        pixels = np.asarray(image.resize((width, height)), dtype=np.uint8).reshape(
            1, height, width, -1
        )
        probabilities = serve(images=tf.constant(pixels))["probabilities"].numpy()[0]
        best = np.argsort(-probabilities)[:5]
        return {
            "top_k": [{"label": card.classes[i], "score": float(probabilities[i])} for i in best]
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_server")
    parser.add_argument("--model", required=True, help="a version folder of the repository")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        build_app(args.model),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
