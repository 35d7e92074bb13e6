"""python -m benchmarks: convbridge over HTTP against the in-process ceiling and its floors.

For each model: the SavedModel called in process (the ceiling), a bare FastAPI route (the
most a Python front end can answer), the naive one-call-per-request server, and convbridge
with 1 and 2 front ends, at several concurrencies, all in one run on this machine; for `gap`,
also gRPC beside REST from one asyncio client (benchmarks/protocols.py) and four times the
capacity offered at a fixed rate (benchmarks/overload.py); last, the front-end count that
answered most at c=64 runs between ceilings measured right around it, and the throughput
targets are judged on those rounds (benchmarks/paired.py). See README.md for the latest table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.lone import measure_lone  # noqa: E402
from benchmarks.overload import measure_overload  # noqa: E402
from benchmarks.protocols import measure_protocols  # noqa: E402
from benchmarks.report import TUNED, TUNED_FRONT_ENDS, TUNED_SETTINGS, at_defaults  # noqa: E402
from benchmarks.servers import ROOT, ServerProcess  # noqa: E402

if TYPE_CHECKING:
    from PIL import Image

RESULTS = ROOT / "benchmarks" / "results"
PROTOCOL_VARIANTS = ("gap",)  # gRPC beside REST: the light model, where the transport shows
PROTOCOL_LEVELS = [1, 32]
# Front ends scale where they are the bottleneck. TF Serving's JSON (the benchmark PNG's pixels
# as lists) costs a front end's event loop about 0.5 ms of Python a request, the GIL held, and
# the executor the same 32x32 batch as a PNG: the growth from one front end to two is judged
# there. A camera-sized JPEG costs milliseconds to decode and resize, but Pillow releases the
# GIL meanwhile, so one front end's decoder threads already use every core: shown beside it.
SCALING_VARIANTS = ("gap",)
PHOTO_SIZE = (640, 480)
# A heavy model under saturating load computes more with one intra-op thread and two batches
# at once (docs/throughput.md), and less at low concurrency: shown beside the defaults, for
# the operator who tunes for it, and never counted for the targets.
TUNED_VARIANTS = ("flatten",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--variants", default="gap,flatten", help="models to measure")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument(
        "--front-ends", default="0,1,2", help="CONVBRIDGE_WORKERS to compare (0: one process)"
    )
    parser.add_argument("--batches", default="1,8,32,64", help="in-process batch sizes")
    parser.add_argument("--seconds", type=float, default=10, help="per load level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true")
    return parser.parse_args(argv)


def coloured_digit() -> Image.Image:
    """A held-out MNIST digit, coloured: the picture in every benchmark body."""
    from PIL import Image, ImageOps

    from training.data import load_dataset

    digit = load_dataset("digits").test.images[0][:, :, 0]
    return ImageOps.colorize(Image.fromarray(digit), (20, 40, 90), (250, 220, 120))


def body_png() -> bytes:
    """A real 32x32 RGB PNG: a held-out MNIST digit on a coloured background."""
    from PIL import Image

    buffer = io.BytesIO()
    coloured_digit().resize((32, 32), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


def body_photo() -> bytes:
    """A real camera-sized JPEG (640x480, quality 90): smooth light, texture and a digit."""
    from PIL import Image

    width, height = PHOTO_SIZE
    rows, columns = np.mgrid[0:height, 0:width]
    texture = np.random.default_rng(0).integers(0, 40, (height, width, 3))
    light = np.stack([columns * 200 // width, rows * 200 // height, (rows + columns) % 256], -1)
    photo = Image.fromarray(np.clip(light + texture, 0, 255).astype(np.uint8))
    stamp = coloured_digit().resize((height // 2, height // 2))
    photo.paste(stamp, (width // 3, height // 4))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def body_json(png: Path) -> bytes:
    """TF Serving's REST predict body (row format) of the benchmark PNG's pixels."""
    import orjson

    return orjson.dumps({"instances": [pixels(png).tolist()]})


def load_levels(
    server: ServerProcess,
    path: str,
    body: Path,
    levels: list[int],
    seconds: float,
    workdir: Path,
    content_type: str = "image/png",
) -> list[dict[str, float]]:
    from benchmarks.load import run_wrk

    # Warm up the whole path.
    run_wrk(server.url + path, body, 8, 2, server.pid, workdir, content_type)
    results = []
    for concurrency in levels:
        result = run_wrk(
            server.url + path, body, concurrency, seconds, server.pid, workdir, content_type
        )
        results.append(asdict(result))
        print(
            f"  c={concurrency:<3} {result.throughput:8.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
            flush=True,
        )
    return results


def servers_for(
    variant: str, model_path: Path, front_ends: list[int], workdir: Path
) -> dict[str, tuple[ServerProcess, str]]:
    """Every server of one comparison, each with the path it answers on."""
    servers: dict[str, tuple[ServerProcess, str]] = {
        "bare FastAPI route": (
            ServerProcess("benchmarks.bare_server", [], workdir / "bare.log", {}, "/healthz"),
            "/predict",
        ),
        "naive": (
            ServerProcess(
                "benchmarks.naive_server",
                ["--model", str(model_path)],
                workdir / "naive.log",
                {},
                ready_path="/healthz",
            ),
            "/predict",
        ),
    }
    servers.update(convbridge_servers(variant, model_path, front_ends, workdir))
    if variant in TUNED_VARIANTS:
        workers = {"CONVBRIDGE_WORKERS": str(TUNED_FRONT_ENDS)}
        env = {**_convbridge_env(model_path), **workers, **TUNED_SETTINGS}
        servers[f"{TUNED}, {TUNED_FRONT_ENDS} front end(s)"] = (
            ServerProcess("service", [], workdir / "convbridge-tuned.log", env),
            f"/models/{variant}/classify",
        )
    return servers


def convbridge_servers(
    variant: str, model_path: Path, front_ends: list[int], workdir: Path, tag: str = ""
) -> dict[str, tuple[ServerProcess, str]]:
    """convbridge at each front-end count (0: one process), started, with the classify path."""
    servers = {}
    for count in front_ends:
        env = {**_convbridge_env(model_path), "CONVBRIDGE_WORKERS": str(count)}
        servers[convbridge_label(count)] = (
            ServerProcess("service", [], workdir / f"convbridge-{count}{tag}.log", env),
            f"/models/{variant}/classify",
        )
    return servers


def convbridge_label(count: int) -> str:
    return "convbridge, 1 process" if count == 0 else f"convbridge, {count} front end(s)"


def _convbridge_env(model_path: Path) -> dict[str, str]:
    """The benchmark's model repository, not polled; every other setting at its default."""
    return {
        "CONVBRIDGE_REPOSITORY": str(model_path.parent.parent),
        "CONVBRIDGE_POLL_INTERVAL_S": "0",
    }


def measure_variant(args: argparse.Namespace, variant: str, workdir: Path) -> dict[str, Any]:
    from benchmarks.models import export_benchmark_model

    levels = [int(c) for c in args.concurrency.split(",")]
    model_path = export_benchmark_model(workdir / "models", variant)
    body = workdir / "body.png"
    body.write_bytes(body_png())
    batches = [int(b) for b in args.batches.split(",")]
    before = measure_ceiling_rows(model_path, variant, batches, "before the servers")
    runs = {}
    protocols: dict[str, Any] = {}
    overload: dict[str, Any] = {}
    front_ends = [int(count) for count in args.front_ends.split(",")]
    servers = servers_for(variant, model_path, front_ends, workdir)
    last = [name for name in servers if at_defaults(name)][-1]
    lone = measure_lone_requests(servers, body.read_bytes())
    for name, (server, path) in servers.items():
        try:
            server.wait_ready()
            print(f"{name} over HTTP ({server.url}{path}):", flush=True)
            print_copy_choices(server)
            runs[name] = load_levels(server, path, body, levels, args.seconds, workdir)
            if name == last and variant in PROTOCOL_VARIANTS:
                print(f"{name}, REST and gRPC from one asyncio client:", flush=True)
                protocols = {
                    "server": name,
                    "runs": measure_protocols(
                        server, variant, pixels(body), PROTOCOL_LEVELS, args.seconds
                    ),
                }
                print(f"{name}, overload at four times its capacity:", flush=True)
                overload = {"server": name, **measure_overload(server, variant, body_png())}
        finally:
            server.stop()
    scaling = (
        measure_scaling(args, variant, model_path, front_ends, workdir)
        if variant in SCALING_VARIANTS
        else {}
    )
    paired = measure_paired_rounds(args, variant, model_path, body, front_ends, runs, workdir)
    after = measure_ceiling_rows(model_path, variant, batches, "after the servers")
    # The VM's speed drifts: a ceiling measured in a slow moment would flatter every ratio,
    # so each batch size keeps the faster of its two measurements.
    ceiling = [
        max(pair, key=lambda row: row["images_per_second"])
        for pair in zip(before, after, strict=True)
    ]
    return {
        "variant": variant,
        "ceiling": ceiling,
        "ceiling_measurements": [before, after],
        "runs": runs,
        "lone": lone,
        "protocols": protocols,
        "overload": overload,
        "scaling": scaling,
        "paired": paired,
    }


def measure_paired_rounds(
    args: argparse.Namespace,
    variant: str,
    model_path: Path,
    body: Path,
    front_ends: list[int],
    runs: dict[str, list[dict[str, Any]]],
    workdir: Path,
) -> dict[str, Any]:
    """The front-end count that answered most at c=64, paired with the ceiling (paired.py)."""
    from benchmarks.ceiling import Ceiling
    from benchmarks.paired import CONCURRENCY, pair_with_ceiling

    def at_target_load(count: int) -> float:
        levels = runs.get(convbridge_label(count), [])
        return next((r["throughput"] for r in levels if r["concurrency"] == CONCURRENCY), 0.0)

    count = max(front_ends, key=at_target_load)
    if at_target_load(count) == 0:
        return {}  # no run at the targets' concurrency to pair
    ((name, (server, path)),) = convbridge_servers(
        variant, model_path, [count], workdir, "-paired"
    ).items()
    print(f"{name} between in-process ceilings, the targets' ratios:", flush=True)
    try:
        paired = pair_with_ceiling(
            server,
            path,
            body,
            Ceiling(model_path, (32, 32, 3)),
            args.seconds,
            workdir,
        )
    finally:
        print_copy_choices(server)
        server.stop()
    return {"server": name, **paired}


def print_copy_choices(server: ServerProcess) -> None:
    """Where the executor put each model's calls, as its log says: a light model's batches
    run on its lone copy, a heavy one's on the eager signatures (the throughput follows)."""
    for line in server.log().splitlines():
        if "a call alone takes" in line:
            print(f"  {line.split(': ', 1)[-1]}", flush=True)


def measure_lone_requests(
    servers: dict[str, tuple[ServerProcess, str]], body: bytes
) -> dict[str, Any]:
    """The naive server and every convbridge, all up at once, each answering turns of requests."""
    taking_part = {
        name: entry for name, entry in servers.items() if name == "naive" or "convbridge" in name
    }
    for server, _ in taking_part.values():
        server.wait_ready()
    print("lone requests, turns interleaved between the naive server and convbridge:", flush=True)
    results = {name: asdict(result) for name, result in measure_lone(taking_part, body).items()}
    for name, result in results.items():
        print(
            f"  {name:<28} p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
            f"vs naive {result['vs_naive_ms']:+.2f} ms  "
            f"(first of a turn {result['cold_p50_ms']:6.2f} ms, {result['cold_vs_naive_ms']:+.2f})",
            flush=True,
        )
    return results


def measure_scaling(
    args: argparse.Namespace, variant: str, model_path: Path, front_ends: list[int], workdir: Path
) -> dict[str, Any]:
    """convbridge alone, at each front-end count, with bodies that make the front ends work:
    TF Serving JSON (the GIL held: judged) and camera-sized JPEGs (decoded without it)."""
    photo, document = workdir / "photo.jpg", workdir / "predict.json"
    photo.write_bytes(body_photo())
    document.write_bytes(body_json(workdir / "body.png"))
    bodies: list[dict[str, Any]] = [
        {
            "body": "TF Serving JSON (32x32x3 pixel lists)",
            "file": document,
            "type": "application/json",
            "path": f"/v1/models/{variant}:predict",
            "judged": True,
        },
        {
            "body": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG",
            "file": photo,
            "type": "image/jpeg",
            "path": f"/models/{variant}/classify",
            "judged": False,
        },
    ]
    runs: dict[str, dict[str, Any]] = {body["body"]: {} for body in bodies}
    for name, (server, _) in convbridge_servers(
        variant, model_path, front_ends, workdir, "-scaling"
    ).items():
        try:
            server.wait_ready()
            for body in bodies:
                print(f"{name}, {body['body']} bodies:", flush=True)
                runs[body["body"]][name] = load_levels(
                    server,
                    body["path"],
                    body["file"],
                    [32, 64],
                    args.seconds,
                    workdir,
                    body["type"],
                )
        finally:
            server.stop()
    return {
        "bodies": [
            {
                "body": body["body"],
                "bytes": body["file"].stat().st_size,
                "path": body["path"],
                "judged": body["judged"],
                "runs": runs[body["body"]],
            }
            for body in bodies
        ]
    }


def describe_machine() -> str:
    """The CPU, its cores, Python, and TensorFlow with the kernels it runs (the servers and the
    ceiling alike inherit this process's environment): oneDNN's or Eigen's moves every figure
    of the table, and TensorFlow picks them by CPU unless TF_ENABLE_ONEDNN_OPTS says."""
    import tensorflow as tf

    from service.inference.runtime import cpu_kernels

    return (
        f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__} ({cpu_kernels()})"
    )


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure_ceiling_rows(
    model_path: Path, variant: str, batches: list[int], when: str
) -> list[dict[str, Any]]:
    from benchmarks.ceiling import measure_ceiling

    print(f"in-process ceiling of {variant} (32x32x3), {when}:", flush=True)
    rows = [asdict(r) for r in measure_ceiling(model_path, (32, 32, 3), batches, seconds=3)]
    for row in rows:
        print(f"  batch {row['batch']:<3} {row['images_per_second']:8.1f} images/s", flush=True)
    return rows


def pixels(body: Path) -> np.ndarray:
    """The benchmark PNG's pixels, as a client that decodes it itself would send them."""
    from PIL import Image

    return np.asarray(Image.open(body).convert("RGB"), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.load import WrkMissingError
    from benchmarks.report import format_markdown, update_readme

    comparisons = []
    with tempfile.TemporaryDirectory(prefix="convbridge-bench-") as scratch:
        try:
            for variant in args.variants.split(","):
                comparisons.append(measure_variant(args, variant, Path(scratch)))
        except WrkMissingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    results = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": describe_machine(),
        "comparisons": comparisons,
        "seconds": args.seconds,
    }
    markdown = format_markdown(results)
    print("\n" + markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = results["date"].replace(":", "").replace("-", "")[:15]
    (args.out / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{stamp}.md").write_text(markdown)
    (args.out / "latest.md").write_text(markdown)
    if args.update_readme:
        update_readme(ROOT / "README.md", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
