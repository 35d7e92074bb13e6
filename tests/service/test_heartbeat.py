"""The heartbeat file: a process's beats, the supervisor's silence and a front end's watch."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from pathlib import Path

from service import heartbeat
from service.inference.runtime import CallCount


def _beat_at(path: Path, stamp: float) -> None:
    """A beat at ``stamp`` with no model call under way."""
    path.write_bytes(struct.pack("dd", stamp, math.nan))


def test_silence_is_unknown_before_the_first_beat(tmp_path: Path) -> None:
    path = tmp_path / "pulse"
    assert heartbeat.silence(path) is None  # no file yet
    heartbeat.reset(path)
    assert heartbeat.silence(path) is None  # a child just (re)started
    _beat_at(path, time.monotonic() - 7.0)
    quiet = heartbeat.silence(path)
    assert quiet is not None and 7.0 <= quiet < 8.0


def test_a_watch_turns_stale_after_missed_beats_and_back_with_the_next(tmp_path: Path) -> None:
    path = tmp_path / "pulse"
    heartbeat.reset(path)
    changes: list[float | None] = []
    watch = heartbeat.Watch(path, changes.append)

    async def scenario() -> list[float | None]:
        task = asyncio.create_task(watch.run())
        seen = []
        await asyncio.sleep(0.05)
        seen.append(watch.stale)  # not judged before the first beat
        _beat_at(path, time.monotonic() - heartbeat.STALE_S + 1.0)  # two beats missed: fine
        await asyncio.sleep(heartbeat.INTERVAL_S / 2 + 0.05)
        seen.append(watch.stale)
        _beat_at(path, time.monotonic() - heartbeat.STALE_S - 2.0)
        await asyncio.sleep(heartbeat.INTERVAL_S / 2 + 0.05)
        seen.append(watch.stale)
        pulse = heartbeat.Heartbeat(path)  # the process beats again
        pulse.start()
        await asyncio.sleep(heartbeat.INTERVAL_S / 2 + 0.05)
        seen.append(watch.stale)
        task.cancel()
        return seen

    before, missed_two, missed_five, beating = asyncio.run(scenario())
    assert (before, missed_two, beating) == (None, None, None)
    assert missed_five is not None
    assert heartbeat.STALE_S + 2.0 <= missed_five < heartbeat.STALE_S + 3.0
    assert len(changes) == 2 and changes[0] == missed_five and changes[1] is None


def test_a_beat_says_how_long_the_oldest_model_call_had_run(tmp_path: Path) -> None:
    path = tmp_path / "pulse"
    calls = CallCount()
    pulse = heartbeat.Heartbeat(path, calls.oldest)

    async def beat() -> None:
        pulse.start()  # one beat now; the next would come INTERVAL_S later

    asyncio.run(beat())
    assert heartbeat.pulse(path)[1] is None  # no call under way
    with calls.call() as first_alone:
        time.sleep(0.2)
        with calls.call() as second_alone:
            asyncio.run(beat())
    assert (first_alone, second_alone) == (True, False)
    quiet, running = heartbeat.pulse(path)
    assert running is not None and 0.2 <= running < 1.0  # the first call's, not the second's
    assert calls.oldest() is None
    assert quiet is not None and quiet < 1.0
