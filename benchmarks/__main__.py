"""python -m benchmarks: convbridge over HTTP against the in-process ceiling and a naive server.

All three are measured in one run on this machine; see README.md for the latest table.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.servers import ROOT, ServerProcess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--variant", default="flatten")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--batches", default="1,8,32,64", help="in-process batch sizes")
    parser.add_argument("--seconds", type=float, default=10, help="per load level")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--update-readme", action="store_true")
    return parser.parse_args(argv)


def body_png() -> bytes:
    """A real 32x32 RGB PNG: a held-out MNIST digit on a coloured background."""
    from PIL import Image, ImageOps

    from training.data import load_dataset

    digit = load_dataset("digits").test.images[0][:, :, 0]
    image = ImageOps.colorize(Image.fromarray(digit), (20, 40, 90), (250, 220, 120))
    buffer = io.BytesIO()
    image.resize((32, 32), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


def load_levels(
    server: ServerProcess, path: str, body: Path, levels: list[int], seconds: float, workdir: Path
) -> list[dict[str, float]]:
    from benchmarks.load import run_wrk

    run_wrk(server.url + path, body, 8, 2, server.pid, workdir)  # warm up the whole path
    results = []
    for concurrency in levels:
        result = run_wrk(server.url + path, body, concurrency, seconds, server.pid, workdir)
        results.append(asdict(result))
        print(
            f"  c={concurrency:<3} {result.throughput:8.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks.ceiling import measure_ceiling
    from benchmarks.load import WrkMissingError
    from benchmarks.models import export_benchmark_model
    from benchmarks.report import format_markdown, update_readme

    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="convbridge-bench-") as scratch:
        workdir = Path(scratch)
        model_path = export_benchmark_model(workdir / "models", args.variant)
        body = workdir / "body.png"
        body.write_bytes(body_png())
        print(f"in-process ceiling of {args.variant} (32x32x3):", flush=True)
        ceiling = [
            asdict(r)
            for r in measure_ceiling(
                model_path, (32, 32, 3), [int(b) for b in args.batches.split(",")], seconds=3
            )
        ]
        for row in ceiling:
            print(f"  batch {row['batch']:<3} {row['images_per_second']:8.1f} images/s", flush=True)
        runs = {}
        servers = {
            "naive": ServerProcess(
                "benchmarks.naive_server",
                ["--model", str(model_path)],
                workdir / "naive.log",
                {},
                ready_path="/healthz",
            ),
            "convbridge": ServerProcess(
                "service",
                [],
                workdir / "convbridge.log",
                {
                    "CONVBRIDGE_REPOSITORY": str(workdir / "models"),
                    "CONVBRIDGE_LOG_LEVEL": "warning",
                },
            ),
        }
        paths = {"naive": "/predict", "convbridge": f"/models/{args.variant}/classify"}
        try:
            for name, server in servers.items():
                server.wait_ready()
                print(f"{name} over HTTP ({server.url}{paths[name]}):", flush=True)
                runs[name] = load_levels(server, paths[name], body, levels, args.seconds, workdir)
                server.stop()
        except WrkMissingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        finally:
            for server in servers.values():
                server.stop()
    results = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "variant": args.variant,
        "ceiling": ceiling,
        "runs": runs,
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
