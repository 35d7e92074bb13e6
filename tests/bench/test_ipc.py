"""benchmarks/ipc.py, run for real at a small scale: every wire option between two processes
delivers the executor's replies unchanged, and the table compares them in one run."""

from __future__ import annotations

import re
import subprocess
import sys

from benchmarks.ipc import OPTIONS, OUTPUTS
from benchmarks.servers import ROOT


def test_every_wire_option_is_measured_against_the_kept_one() -> None:
    command = [sys.executable, "-m", "benchmarks.ipc", "--rounds", "2", "--scale", "0.01"]
    # The run checks each option's replies after its warm-up and raises if one arrived changed.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Machine: ")
    assert "Command: `python -m benchmarks.ipc --rounds 2 --scale 0.01`" in lines[0]
    rows = [line.split(" | ") for line in lines if re.match(r"\| (classify|maps) \|", line)]
    assert {(row[0].lstrip("| "), row[1], row[2]) for row in rows} == {
        (kind, c, option) for kind in OUTPUTS for c in ("1", "64") for option in OPTIONS
    }
    for row in rows:
        rate, rounds, p50, cpu, ratio = row[3:8]
        assert float(rate.replace(",", "")) > 0
        assert len(rounds.split(" / ")) == 2
        assert float(p50) > 0 and float(cpu) > 0
        if row[2] == "unix+shm":
            assert ratio.rstrip(" |") == "1.00x"
