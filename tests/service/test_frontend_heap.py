"""The front end's collector settings (service.frontend.settle_heap), in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.servers import ROOT
from service.frontend import YOUNG_THRESHOLD

CYCLES = 3 * YOUNG_THRESHOLD
# Reference cycles made after settle_heap, each with a finalizer that counts it when the
# collector frees it: a raised threshold must delay cyclic garbage, not keep it.
PROGRAM = f"""
import gc, json, weakref
from service.frontend import settle_heap

settle_heap()
freed = [0]
def count():
    freed[0] += 1
class Node:
    pass
for _ in range({CYCLES}):
    a, b = Node(), Node()
    a.other, b.other = b, a
    weakref.finalize(a, count)
    del a, b
print(json.dumps({{"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "freed": freed[0]}}))
"""


def test_the_front_end_freezes_its_start_up_and_still_collects_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["threshold"][0] == YOUNG_THRESHOLD
    assert seen["frozen"] > 0  # what existed at settle_heap is out of the collector's reach
    # Each cycle is at least two tracked objects: at most one threshold's worth waits.
    assert seen["freed"] >= CYCLES - YOUNG_THRESHOLD // 2
