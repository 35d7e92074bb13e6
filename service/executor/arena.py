"""A shared-memory arena: one file in a tmpfs folder per front end, mapped by both processes.

The front end owns the file and allocates blocks in it (one event loop, so no locks); each
request writes its images into a block and the executor writes the outputs into the same
block, so tensors cross the process boundary without passing through a socket. Like Triton's
system shared-memory regions, the arena is registered once (by path) and addressed by offset
and size, and the executor checks every block it is given against the arena's bounds.
"""

from __future__ import annotations

import bisect
import mmap
import os
from pathlib import Path

ALIGNMENT = 64


def _aligned(size: int) -> int:
    return max(ALIGNMENT, (size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT)


class Arena:
    """The front end's side: create the file, map it, allocate and free blocks (first fit)."""

    def __init__(self, folder: Path, size: int) -> None:
        self.path = folder / f"arena-{os.getpid()}"
        self.size = size
        with open(self.path, "w+b") as file:
            file.truncate(size)
            self._map = mmap.mmap(file.fileno(), size)
        self.memory = memoryview(self._map)
        self._starts = [0]  # free blocks, sorted by start
        self._sizes = {0: size}

    def allocate(self, size: int) -> tuple[int, int] | None:
        """A free block of at least ``size`` bytes as (offset, size), or None when full."""
        size = _aligned(size)
        for index, start in enumerate(self._starts):
            free = self._sizes[start]
            if free >= size:
                del self._starts[index]
                del self._sizes[start]
                if free > size:
                    bisect.insort(self._starts, start + size)
                    self._sizes[start + size] = free - size
                return start, size
        return None

    def free(self, block: tuple[int, int]) -> None:
        """Give a block back, merging it with free neighbours."""
        start, size = block
        index = bisect.bisect_left(self._starts, start)
        following = start + size
        if index < len(self._starts) and self._starts[index] == following:
            size += self._sizes.pop(following)
            del self._starts[index]
        if index > 0:
            before = self._starts[index - 1]
            if before + self._sizes[before] == start:
                self._sizes[before] += size
                return
        self._starts.insert(index, start)
        self._sizes[start] = size

    @property
    def free_bytes(self) -> int:
        return sum(self._sizes.values())

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        _unmap(self.memory, self._map)


class AttachedArena:
    """The executor's side: map a front end's arena and check blocks against its bounds."""

    def __init__(self, path: str, size: int) -> None:
        with open(path, "r+b") as file:
            actual = os.fstat(file.fileno()).st_size
            if actual != size:
                raise ValueError(f"arena {path} has {actual} bytes, not the {size} announced")
            self._map = mmap.mmap(file.fileno(), size)
        self.memory = memoryview(self._map)
        self.size = size

    def check(self, block: list[int] | None) -> tuple[int, int] | None:
        """A block from a request, or ValueError when it is not inside the arena."""
        if block is None:
            return None
        offset, size = int(block[0]), int(block[1])
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"block {offset}+{size} lies outside the {self.size}-byte arena")
        return offset, size

    def close(self) -> None:
        _unmap(self.memory, self._map)


def _unmap(memory: memoryview, mapping: mmap.mmap) -> None:
    """Unmap unless arrays still look into the memory (then it goes with the last of them)."""
    try:
        memory.release()
        mapping.close()
    except BufferError:
        pass
