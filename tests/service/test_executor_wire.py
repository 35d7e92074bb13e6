"""The wire between front ends and the executor, in one process: arena, frames, arrays, errors."""

from __future__ import annotations

import numpy as np
import pytest

from service.executor.arena import Arena, AttachedArena
from service.executor.protocol import (
    FrameProtocol,
    error_header,
    frame,
    pack_arrays,
    raise_error,
    unpack_arrays,
)
from service.inference import QueueFullError, UnknownSignatureError


@pytest.fixture
def arena(tmp_path):
    region = Arena(tmp_path, 4096)
    yield region
    region.close()


def test_blocks_are_aligned_reused_and_merged_when_freed(arena: Arena) -> None:
    first, second, third = (arena.allocate(100) for _ in range(3))
    assert [first, second, third] == [(0, 128), (128, 128), (256, 128)]
    assert arena.allocate(4096) is None  # no room for that much now
    arena.free(second)
    assert arena.allocate(64) == (128, 64)  # first fit: the hole left by the second block
    arena.free((128, 64))
    arena.free(first)
    arena.free(third)
    assert arena.free_bytes == 4096
    assert arena.allocate(4096) == (0, 4096)  # every neighbour merged back into one block


def test_the_executor_maps_the_same_bytes_and_checks_bounds(arena: Arena) -> None:
    attached = AttachedArena(str(arena.path), arena.size)
    try:
        arena.memory[10:13] = b"abc"
        assert bytes(attached.memory[10:13]) == b"abc"
        assert attached.check([4000, 96]) == (4000, 96)
        assert attached.check(None) is None
        for block in ([4000, 97], [-1, 10], [0, -5]):
            with pytest.raises(ValueError, match="outside the 4096-byte arena"):
                attached.check(block)
    finally:
        attached.close()
    with pytest.raises(ValueError, match="has 4096 bytes, not the 8192 announced"):
        AttachedArena(str(arena.path), 8192)


def test_arrays_travel_in_the_arena_when_they_fit_and_inline_otherwise(arena: Arena) -> None:
    arrays = {
        "probabilities": np.arange(20, dtype=np.float32).reshape(2, 10),
        "conv1": np.full((2, 3, 3, 4), -1.5, dtype=np.float32),
    }
    specs, payload = pack_arrays(arrays, arena.memory, (256, 512))
    assert payload == b"" and [spec[3] for spec in specs] == [256, 256 + 80]
    back = unpack_arrays(specs, arena.memory, memoryview(payload))
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype
    specs, payload = pack_arrays(arrays, arena.memory, (256, 64))  # too small: inline
    assert all(spec[3] is None for spec in specs) and len(payload) == 80 + 288
    back = unpack_arrays(specs, None, memoryview(payload))
    np.testing.assert_array_equal(back["conv1"], arrays["conv1"])


def test_frames_survive_any_split_of_the_stream() -> None:
    messages = [({"op": "run", "id": 1}, b"\x00\x01\x02"), ({"id": 2, "text": "é"}, b"")]
    stream = b"".join(frame(header, payload) for header, payload in messages)
    for cut in range(len(stream) + 1):
        received: list[tuple[dict, bytes]] = []

        def keep(header: dict, payload: memoryview, into: list = received) -> None:
            into.append((header, bytes(payload)))

        protocol = FrameProtocol(keep, lambda: None)
        protocol.data_received(stream[:cut])
        protocol.data_received(stream[cut:])
        assert received == messages


def test_errors_keep_their_type_and_message_across_the_wire() -> None:
    with pytest.raises(QueueFullError, match="512 images are queued"):
        raise_error(error_header(7, QueueFullError("512 images are queued")))
    with pytest.raises(UnknownSignatureError, match="no signature"):
        raise_error(error_header(7, UnknownSignatureError("no signature 'explain'")))
    header = error_header(8, KeyError("lease"))
    assert header["id"] == 8 and header["error"] == "unexpected"
    with pytest.raises(RuntimeError, match="the model executor failed: KeyError"):
        raise_error(header)
