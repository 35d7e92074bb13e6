"""The benchmark table: throughput, latency and the ratios the throughput targets are set in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def format_markdown(results: dict[str, Any]) -> str:
    ceiling = {row["batch"]: row for row in results["ceiling"]}
    batch32 = ceiling.get(32, results["ceiling"][-1])["images_per_second"]
    batch1_ms = ceiling.get(1, results["ceiling"][0])["median_ms"]
    naive = {run["concurrency"]: run for run in results["runs"].get("naive", [])}
    lines = [
        f"Machine: {results['machine']}. Command: `{results['command']}` ({results['date']}). "
        f"Model: `{results['variant']}` at 32x32x3, {results['seconds']:g} s per level, "
        "raw PNG bodies from wrk (one thread) on 127.0.0.1.",
        "",
        "| in-process batch | median ms | images/s |",
        "| ---: | ---: | ---: |",
    ]
    lines += [
        f"| {b} | {row['median_ms']:.2f} | {row['images_per_second']:,.0f} |"
        for b, row in sorted(ceiling.items())
    ]
    lines += [
        "",
        "| server | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | vs ceiling b32 "
        "| vs naive | p50 - in-process b1 | wrk CPU | server CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, runs in results["runs"].items():
        for run in runs:
            base = naive.get(run["concurrency"])
            versus = f"{run['throughput'] / base['throughput']:.2f}x" if base else "-"
            lines.append(
                f"| {server} | {run['concurrency']} | {run['throughput']:,.0f} | "
                f"{run['p50_ms']:.2f} | {run['p95_ms']:.2f} | {run['p99_ms']:.2f} | "
                f"{run['errors']} | {run['throughput'] / batch32:.2f} | {versus} | "
                f"{run['p50_ms'] - batch1_ms:+.2f} ms | {run['wrk_cpu']:.0%} | "
                f"{run['server_cpu']:.0%} |"
            )
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the table between the bench markers in README.md."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} section")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{markdown}{END}{after}")
