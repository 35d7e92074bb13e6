"""gRPC beside REST, from one asyncio client: the same image, the same server, one run.

wrk speaks no gRPC, so both protocols are driven by the same Python client (grpc.aio and
aiohttp on one event loop, closed loop, ``concurrency`` calls in flight) and only the ratios
between its rows mean much: the client's own CPU caps all of them alike.

- REST: KServe v2 ``/v2/models/{name}/infer`` with the binary tensor extension (raw uint8
  bytes after a small JSON header);
- gRPC KServe: ``inference.GRPCInferenceService/ModelInfer`` with ``raw_input_contents``;
- gRPC TF Serving: ``tensorflow.serving.PredictionService/Predict`` with a uint8
  ``TensorProto``.

Requests are serialized once, before the clock starts.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson

from benchmarks.load import percentile
from benchmarks.servers import ServerProcess

Call = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ProtocolRun:
    protocol: str
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int


async def _drive(call: Call, concurrency: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def _requests(variant: str, image: np.ndarray) -> dict[str, bytes]:
    from service.rpc import kserve_pb2, tfserving_pb2

    infer = kserve_pb2.ModelInferRequest(model_name=variant)
    infer.inputs.add(name="images", datatype="UINT8", shape=[1, *image.shape])
    infer.outputs.add(name="probabilities")
    infer.raw_input_contents.append(image.tobytes())
    predict = tfserving_pb2.PredictRequest()
    predict.model_spec.name = variant
    tensor = predict.inputs["images"]
    tensor.dtype = tfserving_pb2.DT_UINT8
    for size in (1, *image.shape):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = image.tobytes()
    return {"infer": infer.SerializeToString(), "predict": predict.SerializeToString()}


async def _measure(
    server: ServerProcess, variant: str, image: np.ndarray, levels: list[int], seconds: float
) -> list[ProtocolRun]:
    import aiohttp
    import grpc

    requests = _requests(variant, image)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [1, *image.shape],
                    "parameters": {"binary_data_size": image.size},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    body = header + image.tobytes()
    runs = []
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

        async def rest() -> None:
            async with session.post(
                f"{server.url}/v2/models/{variant}/infer",
                data=body,
                headers={"Inference-Header-Content-Length": str(len(header))},
            ) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(response.status)

        async def grpc_infer() -> None:
            await infer(requests["infer"], timeout=30)

        async def grpc_predict() -> None:
            await predict(requests["predict"], timeout=30)

        calls: dict[str, Call] = {
            "REST KServe v2 (binary)": rest,
            "gRPC KServe v2 ModelInfer (raw)": grpc_infer,
            "gRPC TF Serving Predict": grpc_predict,
        }
        for name, call in calls.items():
            await _drive(call, 4, 1.0)  # warm up
            for concurrency in levels:
                latencies, errors = await _drive(call, concurrency, seconds)
                runs.append(
                    ProtocolRun(
                        name,
                        concurrency,
                        len(latencies) / seconds,
                        statistics.median(latencies) * 1000 if latencies else 0.0,
                        percentile(latencies, 0.99) * 1000,
                        errors,
                    )
                )
                print(
                    f"  {name:34} c={concurrency:<3} {runs[-1].throughput:8.1f} req/s  "
                    f"p50 {runs[-1].p50_ms:6.2f} ms  p99 {runs[-1].p99_ms:7.2f} ms  "
                    f"errors {errors}",
                    flush=True,
                )
    return runs


def measure_protocols(
    server: ServerProcess, variant: str, image: np.ndarray, levels: list[int], seconds: float
) -> list[dict[str, Any]]:
    """Each protocol at each concurrency, against a server that is ready."""
    return [asdict(run) for run in asyncio.run(_measure(server, variant, image, levels, seconds))]
