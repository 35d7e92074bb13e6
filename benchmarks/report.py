"""The benchmark table: throughput, latency and the ratios the throughput targets are set in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.lone import TURN
from benchmarks.paired import median_ratio

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


# The throughput issue's targets: convbridge at c=64 against the ceiling at batch 32.
TARGETS = {"gap": 0.5, "flatten": 0.85}
LATENCY_MARGIN_MS = 0.3  # c=1 p50 at most the naive server's plus this
TAIL_RATIO = 2.5  # p99 at most this many p50s at c=64
# Under four times its capacity the server still serves at least this share of it, and a lone
# request is back to at most this many times its latency from before the load.
OVERLOAD_SERVED = 0.5
OVERLOAD_RECOVERY = 3.0
# Servers whose label starts with this run with non-default settings: in the tables, never in
# the target checks, which hold for the defaults.
TUNED = "convbridge no lone copy"
TUNED_SETTINGS = {"CONVBRIDGE_LONE_THREADS": "0"}
TUNED_FRONT_ENDS = 2


def at_defaults(server: str) -> bool:
    """A convbridge at its default settings: the servers the targets are checked on."""
    return server.startswith("convbridge") and not server.startswith(TUNED)


def format_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Machine: {results['machine']}. Command: `{results['command']}` ({results['date']}). "
        f"Models at 32x32x3 (untrained weights), {results['seconds']:g} s per level, raw PNG "
        "bodies from wrk (one thread) on 127.0.0.1. CPU ms/req: every process of the server "
        "together, per answered request.",
        "",
    ]
    checks: list[str] = []
    for comparison in results["comparisons"]:
        lines += _comparison(comparison, checks)
    lines += ["| target (ratios from this run) | measured | met |", "| --- | --- | :---: |"]
    return "\n".join(lines + checks) + "\n"


def _comparison(comparison: dict[str, Any], checks: list[str]) -> list[str]:
    variant = comparison["variant"]
    ceiling = {row["batch"]: row for row in comparison["ceiling"]}
    batch32 = ceiling.get(32, comparison["ceiling"][-1])["images_per_second"]
    naive = {run["concurrency"]: run for run in comparison["runs"].get("naive", [])}
    lines = [
        f"**`{variant}`**: in process (the faster of two measurements, before and after the "
        "servers), "
        + ", ".join(
            f"batch {b}: {row['images_per_second']:,.0f} images/s ({row['median_ms']:.2f} ms)"
            for b, row in sorted(ceiling.items())
        ),
        "",
        "| server | c | req/s | p50 ms | p99 ms | p99/p50 | errors | vs ceiling b32 "
        "| vs naive | CPU ms/req | server CPU | wrk CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, runs in comparison["runs"].items():
        for run in runs:
            base = naive.get(run["concurrency"])
            versus = f"{run['throughput'] / base['throughput']:.2f}x" if base else "-"
            lines.append(
                f"| {server} | {run['concurrency']} | {run['throughput']:,.0f} | "
                f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | "
                f"{run['p99_ms'] / max(run['p50_ms'], 1e-9):.1f} | {run['errors']} | "
                f"{run['throughput'] / batch32:.2f} | {versus} | "
                f"{run.get('cpu_ms_per_request', 0):.2f} | {run['server_cpu']:.0%} | "
                f"{run['wrk_cpu']:.0%} |"
            )
    lines.append("")
    if any(server.startswith(TUNED) for server in comparison["runs"]):
        lines += [
            f"*{TUNED}*: {TUNED_FRONT_ENDS} front ends with "
            + " ".join(f"`{key}={value}`" for key, value in TUNED_SETTINGS.items())
            + ": no lone copy, so TensorFlow's default pools, one batch at a time (the defaults "
            "before the lone copies; see above); shown for comparison and left out of the "
            "target checks, which hold for the defaults.",
            "",
        ]
    lines += _lone(comparison.get("lone") or {})
    lines += _paired(comparison.get("paired") or {})
    lines += _protocols(comparison.get("protocols") or {})
    lines += _overload(variant, comparison.get("overload") or {}, checks)
    lines += _scaling(variant, comparison.get("scaling") or {}, checks)
    _check(comparison, batch32, checks)
    return lines


def _overload(variant: str, overload: dict[str, Any], checks: list[str]) -> list[str]:
    if not overload:
        return []
    statuses = ", ".join(f"{count:,} x {status}" for status, count in overload["statuses"].items())
    refused = overload["p99_ms"].get("503")
    lines = [
        f"Overload ({overload['server']}, {overload['images_per_request']} images a request, "
        f"open loop): capacity {overload['capacity_images_per_second']:,.0f} images/s; offered "
        f"{overload['offered_vs_capacity']:.1f}x it, served {overload['served_vs_capacity']:.2f}x; "
        f"answers {statuses}"
        + (f"; 503 p50/p99 {overload['p50_ms']['503']:.1f}/{refused:.1f} ms" if refused else "")
        + f"; a lone request's p50 {overload['quiet_p50_ms_before']:.2f} ms before, "
        f"{overload['quiet_p50_ms_after']:.2f} ms after; memory +{overload['rss_growth_mib']:.0f} "
        "MiB.",
        "",
    ]
    served = overload["served_vs_capacity"]
    recovery = overload["quiet_p50_ms_after"] / max(overload["quiet_p50_ms_before"], 1e-9)
    checks.append(
        f"| `{variant}` overload: served >= {OVERLOAD_SERVED}x capacity | {served:.2f}x | "
        f"{_mark(served >= OVERLOAD_SERVED)} |"
    )
    checks.append(
        f"| `{variant}` after overload: lone p50 <= {OVERLOAD_RECOVERY}x before | "
        f"{recovery:.2f}x | {_mark(recovery <= OVERLOAD_RECOVERY)} |"
    )
    return lines


def _scaling(variant: str, scaling: dict[str, Any], checks: list[str]) -> list[str]:
    """convbridge alone with bodies that make the front ends work; growth judged where they
    are the bottleneck (runs before JSON bodies measured JPEGs alone, judged)."""
    bodies = scaling.get("bodies") or ([{**scaling, "judged": True}] if scaling else [])
    lines: list[str] = []
    for body in bodies:
        runs = body.get("runs", {})
        if not runs:
            continue
        where = f" to `{body['path']}`" if "path" in body else ""
        lines += [
            f"Front ends at work (`{variant}`, {body['body']} bodies of {body['bytes']:,} bytes"
            f"{where}; growth with front ends "
            + ("judged" if body["judged"] else "shown, not judged: see the reading")
            + "):",
            "",
            "| server | c | req/s | p50 ms | p99 ms | errors | CPU ms/req | server CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for server, levels in runs.items():
            for run in levels:
                lines.append(
                    f"| {server} | {run['concurrency']} | {run['throughput']:,.0f} | "
                    f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['errors']} | "
                    f"{run['cpu_ms_per_request']:.2f} | {run['server_cpu']:.0%} |"
                )
        lines.append("")
        if body["judged"]:
            at = {
                server: {run["concurrency"]: run for run in levels}
                for server, levels in runs.items()
            }
            _grows_with_front_ends(f"`{variant}` {body['body']}", at, checks)
    return lines


def _protocols(protocols: dict[str, Any]) -> list[str]:
    """gRPC beside REST, one asyncio client, ratios against REST at the same concurrency."""
    runs = protocols.get("runs", [])
    if not runs:
        return []
    rest = {run["concurrency"]: run for run in runs if run["protocol"].startswith("REST")}
    lines = [
        f"REST and gRPC from one asyncio client (aiohttp, grpc.aio) against {protocols['server']}"
        " (its CPU caps every row alike; compare rows, not with wrk's):",
        "",
        "| protocol | c | req/s | p50 ms | p99 ms | errors | vs REST |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        base = rest.get(run["concurrency"])
        versus = f"{run['throughput'] / base['throughput']:.2f}x" if base else "-"
        lines.append(
            f"| {run['protocol']} | {run['concurrency']} | {run['throughput']:,.0f} | "
            f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['errors']} | {versus} |"
        )
    return [*lines, ""]


def _check(comparison: dict[str, Any], batch32: float, checks: list[str]) -> None:
    variant = comparison["variant"]
    ours = {k: v for k, v in comparison["runs"].items() if at_defaults(k)}
    at = {name: {run["concurrency"]: run for run in runs} for name, runs in ours.items()}
    best = max(ours, key=lambda name: at[name].get(64, {"throughput": 0})["throughput"])
    top = at[best].get(64)
    paired = comparison.get("paired") or {}
    goal = TARGETS.get(variant, 0.0)
    if paired.get("rounds") and variant in TARGETS:
        # Judged on the rounds paired with the ceiling (benchmarks/paired.py); the table's
        # ratio, against ceilings minutes away, is given beside it.
        ratios = [paired_round["ratio"] for paired_round in paired["rounds"]]
        ratio = median_ratio(paired["rounds"])
        table = f"; {top['throughput'] / batch32:.2f}x in the table" if top else ""
        checks.append(
            f"| `{variant}` c=64 >= {goal}x ceiling | {_against(ratio, goal)}x, the median of "
            f"{' / '.join(_against(r, goal) for r in ratios)} paired ({paired['server']}{table}) | "
            f"{_mark(ratio >= goal)} |"
        )
    elif top is not None and variant in TARGETS:
        ratio = top["throughput"] / batch32
        checks.append(
            f"| `{variant}` c=64 >= {goal}x ceiling | {_against(ratio, goal)}x ({best}) | "
            f"{_mark(ratio >= goal)} |"
        )
    lone = comparison.get("lone") or {}
    for name, levels in at.items():
        if name in lone:  # turns interleaved with the naive server's: the same moments of the VM
            extra = lone[name]["vs_naive_ms"]
            checks.append(
                f"| `{variant}` lone request p50 <= naive + {LATENCY_MARGIN_MS} ms ({name}) | "
                f"{extra:+.2f} ms | {_mark(extra <= LATENCY_MARGIN_MS)} |"
            )
        heavy = levels.get(64)
        if heavy is not None:
            tail = heavy["p99_ms"] / max(heavy["p50_ms"], 1e-9)
            checks.append(
                f"| `{variant}` c=64 p99 <= {TAIL_RATIO} p50 ({name}) | {tail:.1f}x | "
                f"{_mark(tail <= TAIL_RATIO)} |"
            )
        errors = sum(run["errors"] for run in levels.values())
        if paired.get("server") == name:
            errors += sum(paired_round["run"]["errors"] for paired_round in paired["rounds"])
        checks.append(f"| `{variant}` no errors ({name}) | {errors} | {_mark(errors == 0)} |")
    alone = at.get("convbridge, 1 process", {}).get(64)
    split = [at[name][64] for name in ours if "front end" in name and 64 in at[name]]
    if alone is not None and split:
        gain = max(run["throughput"] for run in split) / alone["throughput"]
        checks.append(
            f"| `{variant}` c=64 front ends + executor vs one process | {gain:.2f}x | "
            f"{_mark(gain > 1)} |"
        )


def _lone(lone: dict[str, Any]) -> list[str]:
    if not lone:
        return []
    lines = [
        f"Lone requests, interleaved: every server up at once, each round a turn of {TURN} "
        "requests to each, back to back (stdlib http.client, keep-alive), so drift in the VM's "
        "speed hits all of them alike; `vs naive` is the median over rounds of the difference "
        "between turns. The first request of a turn follows the other servers' turns, whose "
        "models swept the caches, and is shown apart (*first of a turn*); the c=1 target is "
        "judged on the rest, which follow one another as at c=1.",
        "",
        "| server | p50 ms | p99 ms | vs naive | first of a turn: p50 ms | vs naive |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in lone.items():
        cold = (
            f"{result['cold_p50_ms']:.2f} | {result['cold_vs_naive_ms']:+.2f} ms"
            if "cold_p50_ms" in result  # runs before the turns timed one request a round
            else "- | -"
        )
        lines.append(
            f"| {name} | {result['p50_ms']:.2f} | {result['p99_ms']:.2f} | "
            f"{result['vs_naive_ms']:+.2f} ms | {cold} |"
        )
    return [*lines, ""]


def _paired(paired: dict[str, Any]) -> list[str]:
    rounds = paired.get("rounds", [])
    if not rounds:
        return []
    lines = [
        f"Paired with the ceiling ({paired['server']}, c={paired['concurrency']}): each run "
        f"between two in-process measurements at batch {paired['batch']} taken right before "
        "and after it, its ratio against the faster of the two; the throughput target is "
        "judged on the median round (`benchmarks/paired.py`).",
        "",
        "| round | ceiling before, images/s | req/s | p50 ms | p99 ms | errors "
        "| ceiling after, images/s | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for number, paired_round in enumerate(rounds, 1):
        run = paired_round["run"]
        lines.append(
            f"| {number} | {paired_round['ceiling_before']:,.0f} | {run['throughput']:,.0f} | "
            f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['errors']} | "
            f"{paired_round['ceiling_after']:,.0f} | {paired_round['ratio']:.2f} |"
        )
    return [*lines, ""]


def _grows_with_front_ends(
    subject: str, at: dict[str, dict[int, dict[str, Any]]], checks: list[str]
) -> None:
    """The scaling check: c=64 throughput rises with every front end added (one process aside)."""
    scaling = [
        levels[64]["throughput"]
        for name, levels in at.items()
        if "front end" in name and 64 in levels
    ]
    if len(scaling) >= 2:
        grows = all(b > a for a, b in zip(scaling, scaling[1:], strict=False))
        checks.append(
            f"| {subject} c=64 grows with front ends | "
            f"{' -> '.join(f'{x:,.0f}' for x in scaling)} req/s | {_mark(grows)} |"
        )


def _against(ratio: float, goal: float) -> str:
    """``ratio`` to two decimals, or to three where two would round it onto the other side of
    ``goal`` (0.496 is not 0.50 against a target of 0.5)."""
    shown = f"{ratio:.2f}"
    return shown if (float(shown) >= goal) == (ratio >= goal) else f"{ratio:.3f}"


def _mark(met: bool) -> str:
    return "yes" if met else "**no**"


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the table between the bench markers in README.md."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} section")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{markdown}{END}{after}")
