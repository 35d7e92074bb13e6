"""python -m benchmarks.ipc: the wire between a front end and the executor, option by option.

Two processes on this machine pass what a front end and the executor pass each other: a
request with one 32x32x3 uint8 image, and a reply with either ten float32 scores (classify)
or one 32x32x64 float32 feature map (256 KiB). The options:

- ``unix+shm``, the kept wire: a Unix stream socket carrying the service's own frames
  (``service.executor.protocol``: length-prefixed JSON headers, its encoder and its parser),
  and the tensors in the front end's shared-memory arena (``service.executor.arena``), where
  the executor writes its outputs into the request's own block;
- ``unix inline``: the same frames with the tensors in the payload (the kept wire's fallback
  when the arena is full);
- ``zeromq``: a DEALER socket against a ROUTER over ``ipc://`` (pyzmq), as vLLM's API server
  talks to its engine core, the header and the tensor as two parts of one message, large
  parts sent and received without a copy;
- ``pickle stream``: one pickle a message, the arrays inside it, as the payload of the same
  frames over the same socket (what a ``multiprocessing.Queue`` writes into its pipe).

Each side is a plain blocking loop, so what differs between rows is the transport and its
encoding, not an event loop. The sender keeps ``c`` requests in flight and times every round
trip. The replies' arrays are built (a view of the arena, or an array over the
received bytes) but not read: what the front end then does with them is the same for every
option. CPU a message is both processes together, the ZeroMQ I/O threads included. The options
alternate within each round, three rounds, and every figure is the median round's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import platform
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.load import process_cpu_seconds
from benchmarks.servers import ROOT
from service.executor.arena import Arena, AttachedArena
from service.executor.protocol import FrameProtocol, frame, pack_arrays, unpack_arrays

OPTIONS = ("unix+shm", "unix inline", "zeromq", "pickle stream")
KEPT = "unix+shm"
IMAGE = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
OUTPUTS: dict[str, dict[str, np.ndarray]] = {
    "classify": {"scores": np.linspace(0, 1, 10, dtype=np.float32).reshape(1, 10)},
    "maps": {"conv3": np.linspace(0, 1, 32 * 32 * 64, dtype=np.float32).reshape(1, 32, 32, 64)},
}
ARENA_BYTES = 64 * 2**20  # room for 64 requests' largest blocks, and more
# (payload, concurrency) -> messages a round: bounded, about a second each here.
COUNTS = {("classify", 1): 4000, ("classify", 64): 40000, ("maps", 1): 1500, ("maps", 64): 6000}
LARGE = 64 * 1024  # ZeroMQ parts from this size go without a copy (pyzmq's advice: ~10-64 KiB)


class _Frames:
    """The service's own frame parser (``FrameProtocol``) fed by hand: the frames it finds."""

    def __init__(self) -> None:
        self.found: list[tuple[dict[str, Any], memoryview]] = []
        self.parser = FrameProtocol(
            lambda header, payload: self.found.append((header, payload)), lambda: None
        )

    def feed(self, chunk: bytes) -> list[tuple[dict[str, Any], memoryview]]:
        self.parser.data_received(chunk)
        found, self.found = self.found, []
        return found


# The executor's side, one per option; each serves one connection until it closes.


def serve_stream(address: str, pickled: bool) -> None:
    """The service's frames, or one pickle a frame, over a Unix stream socket."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(1)
    connection, _ = listener.accept()
    batch = np.empty_like(IMAGE)
    arena: AttachedArena | None = None
    frames = _Frames()
    while chunk := connection.recv(1 << 20):
        out: list[bytes] = []
        for header, payload in frames.feed(chunk):
            if pickled:
                message = pickle.loads(payload)
                batch[:] = message["image"]
                reply = {"id": message["id"], "outputs": OUTPUTS[message["kind"]]}
                out.append(frame({}, pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)))
                continue
            if "arena" in header:
                arena = AttachedArena(header["arena"], header["size"])
                continue
            memory = arena.memory if arena is not None and "block" in header else None
            block = arena.check(header.get("block")) if arena is not None else None
            batch[:] = unpack_arrays(header["inputs"], memory, payload)["image"]
            specs, data = pack_arrays(OUTPUTS[header["kind"]], memory, block)
            out.append(frame({"id": header["id"], "outputs": specs}, data))
        if out:
            connection.sendall(b"".join(out))


def serve_zeromq(address: str) -> None:
    import zmq

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"ipc://{address}")
    batch = np.empty_like(IMAGE)
    while True:
        identity, header_bytes, payload = router.recv_multipart()  # small: copied is faster
        header = orjson.loads(header_bytes)
        if header.get("stop"):
            return
        batch[:] = np.frombuffer(payload, np.uint8).reshape(IMAGE.shape)
        [(name, array)] = OUTPUTS[header["kind"]].items()
        reply = orjson.dumps({"id": header["id"], "name": name, "shape": array.shape})
        router.send_multipart([identity, reply, array.data], copy=array.nbytes < LARGE)


# The front end's side: send(request id, payload kind) queues a request, flush() sends what is
# queued, receive() waits for replies and returns the ids answered.


class StreamClient:
    """Sends without ever blocking on a full socket while replies wait to be read: with 64
    requests in flight and 256 KiB replies, two blocking sends would wait for each other."""

    def __init__(self, address: str, arena: Arena | None, pickled: bool) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.connect(address)
        self.socket.setblocking(False)
        self.arena = arena
        self.pickled = pickled
        self.blocks: dict[int, tuple[int, int]] = {}
        self.frames = _Frames()
        self.found: list[tuple[dict[str, Any], memoryview]] = []
        self.pending: list[bytes] = []
        self.last = np.empty(0)  # the last reply's array
        if arena is not None:
            self.pending.append(frame({"arena": str(arena.path), "size": arena.size}))

    def send(self, request_id: int, kind: str) -> None:
        if self.pickled:
            message = {"id": request_id, "kind": kind, "image": IMAGE}
            self.pending.append(frame({}, pickle.dumps(message, pickle.HIGHEST_PROTOCOL)))
            return
        header: dict[str, Any] = {"id": request_id, "kind": kind}
        memory, block = None, None
        if self.arena is not None:
            needed = max(IMAGE.nbytes, sum(a.nbytes for a in OUTPUTS[kind].values()))
            block = self.arena.allocate(needed)
            if block is None:
                raise RuntimeError("the arena is too small for the requests in flight")
            memory = self.arena.memory
            self.blocks[request_id] = block
            header["block"] = list(block)
        header["inputs"], data = pack_arrays({"image": IMAGE}, memory, block)
        self.pending.append(frame(header, data))

    def flush(self) -> None:
        data = memoryview(b"".join(self.pending))
        self.pending = []
        while data:
            readable, writable, _ = select.select([self.socket], [self.socket], [])
            if readable:
                self._read()
            if writable:
                try:
                    data = data[self.socket.send(data) :]
                except BlockingIOError:
                    pass

    def _read(self) -> None:
        chunk = self.socket.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.found += self.frames.feed(chunk)

    def receive(self) -> list[int]:
        answered: list[int] = []
        while True:
            found, self.found = self.found, []
            for header, payload in found:
                if self.pickled:
                    message = pickle.loads(payload)
                    [self.last] = message["outputs"].values()
                    answered.append(message["id"])
                    continue
                block = self.blocks.pop(header["id"], None)
                memory = self.arena.memory if block is not None and self.arena else None
                [self.last] = unpack_arrays(header["outputs"], memory, payload).values()
                if block is not None and self.arena is not None:
                    self.arena.free(block)
                answered.append(header["id"])
            if answered:
                return answered
            select.select([self.socket], [], [])
            self._read()

    def close(self) -> None:
        self.socket.close()


class ZeroMQClient:
    def __init__(self, address: str) -> None:
        import zmq

        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.connect(f"ipc://{address}")
        self.poll_in = zmq.POLLIN
        self.copy = True  # the replies' parts copied (small) or not (large)
        self.last = np.empty(0)

    def send(self, request_id: int, kind: str) -> None:
        self.copy = all(array.nbytes < LARGE for array in OUTPUTS[kind].values())
        header = orjson.dumps({"id": request_id, "kind": kind})
        self.dealer.send_multipart([header, IMAGE.data], copy=IMAGE.nbytes < LARGE)

    def flush(self) -> None:
        pass

    def receive(self) -> list[int]:
        answered: list[int] = []
        while not answered or self.dealer.poll(0, self.poll_in):
            if self.copy:
                header_bytes, payload = self.dealer.recv_multipart()
                buffer: bytes | memoryview = payload
            else:
                header_frame, payload_frame = self.dealer.recv_multipart(copy=False)
                header_bytes, buffer = header_frame.bytes, payload_frame.buffer
            header = orjson.loads(header_bytes)
            self.last = np.frombuffer(buffer, np.float32).reshape(header["shape"])
            answered.append(header["id"])
        return answered

    def close(self) -> None:
        self.dealer.send_multipart([orjson.dumps({"stop": True}), b""])
        self.dealer.close(linger=1000)
        self.context.term()


Client = StreamClient | ZeroMQClient


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    client: Client, server_pid: int, kind: str, concurrency: int, count: int
) -> dict[str, float]:
    """``count`` requests with ``concurrency`` in flight: rate, round trips, CPU a message."""
    sent_at: dict[int, int] = {}
    trips: list[int] = []
    cpu_before, server_before = _own_cpu(), process_cpu_seconds(server_pid)
    started = time.perf_counter()
    sent = 0
    for _ in range(min(concurrency, count)):
        sent_at[sent] = time.perf_counter_ns()
        client.send(sent, kind)
        sent += 1
    client.flush()
    done = 0
    while done < count:
        for request_id in client.receive():
            trips.append(time.perf_counter_ns() - sent_at.pop(request_id))
            done += 1
            if sent < count:
                sent_at[sent] = time.perf_counter_ns()
                client.send(sent, kind)
                sent += 1
        client.flush()
    wall = time.perf_counter() - started
    cpu = _own_cpu() - cpu_before + process_cpu_seconds(server_pid) - server_before
    trips.sort()
    return {
        "rate": count / wall,
        "p50_us": trips[len(trips) // 2] / 1000,
        "cpu_us": cpu * 1e6 / count,
    }


def _connect(option: str, address: str, arena: Arena) -> Client:
    deadline = time.monotonic() + 30
    while True:
        try:
            if option == "zeromq":
                return ZeroMQClient(address)
            shared = arena if option == KEPT else None
            return StreamClient(address, shared, pickled=option == "pickle stream")
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run(rounds: int, scale: float) -> list[dict[str, Any]]:
    """Every option at every payload and concurrency, alternated within each round."""
    rows: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="convbridge-ipc-", dir=_shm_folder()) as folder:
        arena = Arena(Path(folder), ARENA_BYTES)
        servers, clients = {}, {}
        try:
            for index, option in enumerate(OPTIONS):
                address = str(Path(folder) / f"wire-{index}")
                servers[option] = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.ipc", "--serve", option, address],
                    cwd=ROOT,
                )
                clients[option] = _connect(option, address, arena)
                for kind in OUTPUTS:  # warm, every block of the arena touched once, and checked
                    measure(clients[option], servers[option].pid, kind, 64, 256)
                    [expected] = OUTPUTS[kind].values()
                    if not np.array_equal(clients[option].last, expected):
                        raise AssertionError(f"{option}: the {kind} reply arrived changed")
            for turn in range(rounds):
                for (kind, concurrency), count in COUNTS.items():
                    order = OPTIONS[turn % len(OPTIONS) :] + OPTIONS[: turn % len(OPTIONS)]
                    for option in order:
                        figures = measure(
                            clients[option],
                            servers[option].pid,
                            kind,
                            concurrency,
                            max(10, int(count * scale)),
                        )
                        rows.setdefault((kind, concurrency, option), []).append(figures)
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            arena.close()
    return _medians(rows)


def _medians(rows: dict[tuple[str, int, str], list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Each row's median round (by rate), and its rate against the kept wire's median round."""
    middle = {
        key: sorted(runs, key=lambda f: f["rate"])[len(runs) // 2] for key, runs in rows.items()
    }
    return [
        {
            "payload": kind,
            "c": concurrency,
            "option": option,
            **middle[kind, concurrency, option],
            "vs_kept": middle[kind, concurrency, option]["rate"]
            / middle[kind, concurrency, KEPT]["rate"],
            "rounds": [round(f["rate"]) for f in rows[kind, concurrency, option]],
        }
        for kind, concurrency, option in rows
    ]


def _shm_folder() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def render(table: list[dict[str, Any]], command: str) -> str:
    from benchmarks.__main__ import cpu_name

    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lines = [
        f"Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Command: `{command}` ({when}). A request: one 32x32x3 "
        "uint8 image; a reply: 10 float32 scores (classify) or a 32x32x64 float32 map (maps, "
        "256 KiB). Medians of the rounds; CPU: both processes, a message.",
        "",
        "| payload | c | option | messages/s | rounds | round trip p50 us | CPU us/message "
        "| vs unix+shm |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in table:
        lines.append(
            f"| {row['payload']} | {row['c']} | {row['option']} | {row['rate']:,.0f} | "
            f"{' / '.join(f'{r:,}' for r in row['rounds'])} | {row['p50_us']:.0f} | "
            f"{row['cpu_us']:.1f} | {row['vs_kept']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ipc", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="of the messages a round")
    parser.add_argument("--serve", nargs=2, metavar=("OPTION", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        option, address = args.serve
        if option == "zeromq":
            serve_zeromq(address)
        else:
            serve_stream(address, pickled=option == "pickle stream")
        return
    command = " ".join(["python -m benchmarks.ipc", *(argv if argv is not None else sys.argv[1:])])
    print(render(run(args.rounds, args.scale), command.strip()))


if __name__ == "__main__":
    main()
