"""The supervisor (``python -m service``): starts the executor, then the front ends; keeps them up.

- The executor starts first; when it cannot start at all (no such device, bad settings), the
  supervisor exits non-zero.
- A child that dies is started again (with a back-off when it keeps dying); front ends answer
  503 while the executor is away and reconnect on their own.
- SIGTERM (or SIGINT) goes to the front ends first: they stop accepting and answer every
  request they accepted, which still needs the executor; then the executor stops. The exit
  status is 0 when every child stopped cleanly.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from service import heartbeat
from service.settings import Settings

log = logging.getLogger("convbridge.supervisor")
STARTUP_TIMEOUT_S = 600  # TensorFlow's first import on a cold disk, then the device
STOP_TIMEOUT_S = 40  # front ends drain for up to 30 s (uvicorn's graceful timeout)


@dataclass
class Child:
    """One process the supervisor keeps running."""

    name: str
    command: list[str]
    env: dict[str, str]
    heartbeat: Path  # written by its event loop (``--heartbeat``); see service/heartbeat.py
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = field(default=0.0)

    def start(self) -> None:
        heartbeat.reset(self.heartbeat)
        self.process = subprocess.Popen(
            [*self.command, "--heartbeat", str(self.heartbeat)],
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.started = time.monotonic()
        log.info("%s started (pid %d)", self.name, self.process.pid)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies (even by kill -9)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def runtime_folder(arena_bytes: int) -> Path:
    """A private folder for the executor's socket, the arenas and the metrics files.

    In /dev/shm when it has room for every arena (a full tmpfs would kill a front end with
    SIGBUS mid-request; Docker's default is 64 MB); else in the temporary folder, where the
    arenas are files in the page cache, shared all the same.
    """
    shm = Path("/dev/shm")
    base = None
    if shm.is_dir() and os.access(shm, os.W_OK):
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize >= 2 * arena_bytes:
            base = shm
        else:
            log.warning("/dev/shm has too little room for %d bytes of arenas", arena_bytes)
    return Path(tempfile.mkdtemp(prefix="convbridge-", dir=base))


def executor_env(base: dict[str, str], settings: Settings) -> dict[str, str]:
    """The executor's environment: glibc's malloc tunables, read when the process starts.

    - ``huge_pages``: the heap and large blocks in transparent huge pages
      (``glibc.malloc.hugetlb=1``). A lone ``flatten`` request streams 100 MB of weights, and
      with 4 KiB pages it misses the TLB on every page, cold from the calls before (interleaved
      with the naive server, two front ends: +0.32-0.41 -> +0.24-0.26 ms; ``gap`` and full
      batches unchanged).
    - ``malloc_arenas``: at most this many arenas (``glibc.malloc.arena_max``). With glibc's
      eight per core, TensorFlow's threads spread each load over spare arenas that keep their
      free pages: on a 2-core host 40 reloads of ``flatten`` grew the tree by 272 MiB, leveling
      off after 20 or so; with two, by 18 MiB, and it started 167 MiB smaller. Throughput and a
      lone request's latency did not move (docs/throughput.md).

    A tunable the operator set in ``GLIBC_TUNABLES`` is kept, and their own wins, as does
    their ``MALLOC_ARENA_MAX``."""
    tunables = [item for item in base.get("GLIBC_TUNABLES", "").split(":") if item]
    theirs = {item.partition("=")[0] for item in tunables}
    if "MALLOC_ARENA_MAX" in base:
        theirs.add("glibc.malloc.arena_max")
    wanted = []
    if settings.huge_pages:
        wanted.append(("glibc.malloc.hugetlb", 1))
    if settings.malloc_arenas:
        wanted.append(("glibc.malloc.arena_max", settings.malloc_arenas))
    added = [f"{name}={value}" for name, value in wanted if name not in theirs]
    if not added:
        return base
    return {**base, "GLIBC_TUNABLES": ":".join([*tunables, *added])}


def supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    folder = runtime_folder(workers * settings.shm_bytes)
    try:
        return _Supervisor(settings, host, port, workers, folder).run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _Supervisor:
    def __init__(self, settings: Settings, host: str, port: int, workers: int, folder: Path):
        self.folder = folder
        self.socket_path = folder / "executor.sock"
        metrics = folder / "metrics"
        metrics.mkdir()
        self.metrics = metrics
        base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        python = [sys.executable, "-m"]
        self.executor = Child(
            "executor",
            [*python, "service.executor", "--socket", str(self.socket_path)],
            executor_env(base, settings),
            folder / "heartbeat-executor",
        )
        frontend = [*python, "service.frontend", "--host", host, "--port", str(port)]
        frontend += ["--socket", str(self.socket_path), "--arena", str(folder)]
        frontend += ["--executor-heartbeat", str(self.executor.heartbeat)]
        env = {**base, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.frontends = [
            Child(f"front end {i}", frontend, env, folder / f"heartbeat-frontend-{i}")
            for i in range(workers)
        ]
        self.hang_timeout_s = settings.hang_timeout_s
        self.stopping = False
        self.host, self.port = host, port

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        holder = self._hold_port()
        self.executor.start()
        if not self._wait_for_executor():
            return 2
        for frontend in self.frontends:
            frontend.start()
        holder.close()
        while not self.stopping:
            self._keep_alive(self.executor)
            for frontend in self.frontends:
                self._keep_alive(frontend)
            time.sleep(0.1)
        return self._shut_down()

    def _hold_port(self) -> socket.socket:
        """Bind the port now, so a port in use fails at once and not in every front end."""
        from service.frontend import listening_socket

        return listening_socket(self.host, self.port)

    def _wait_for_executor(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping:
            code = self.executor.exited()
            if code is not None:
                print(
                    f"convbridge: the model executor could not start (exit {code})", file=sys.stderr
                )
                return False
            if self.socket_path.exists():
                return True
            time.sleep(0.05)
        if not self.stopping:
            print("convbridge: the model executor did not start in time", file=sys.stderr)
        self.executor.signal(signal.SIGKILL)
        return False

    def _keep_alive(self, child: Child) -> None:
        code = child.exited()
        if code is None:
            self._check_pulse(child)
            return
        now = time.monotonic()
        if child.restart_at == 0.0:
            lived = now - child.started
            child.failures = 0 if lived > 30 else child.failures + 1
            delay = min(5.0, 0.25 * 2 ** max(0, child.failures - 1))
            child.restart_at = now + delay
            log.error("%s exited with %s; starting it again in %.2f s", child.name, code, delay)
            if child is not self.executor and child.process is not None:
                self._forget_front_end(child.process.pid)
        if now >= child.restart_at:
            child.restart_at = 0.0
            child.start()

    def _check_pulse(self, child: Child) -> None:
        """Kill a child whose event loop has stopped turning, or whose model call has not
        returned, for longer than CONVBRIDGE_HANG_TIMEOUT_S; it is then started again."""
        quiet, running = heartbeat.pulse(child.heartbeat)
        if quiet is not None and quiet > self.hang_timeout_s:
            why = f"has not turned its event loop for {quiet:.1f} s"
        elif running is not None and running > self.hang_timeout_s:
            why = f"has been in one model call for {running:.1f} s"
        else:
            return
        pid = child.process.pid if child.process is not None else 0
        log.error(
            "%s (pid %d) %s (CONVBRIDGE_HANG_TIMEOUT_S): killing it, to start it again",
            child.name,
            pid,
            why,
        )
        heartbeat.reset(child.heartbeat)  # judged once
        child.signal(signal.SIGKILL)

    def _forget_front_end(self, pid: int) -> None:
        """A dead front end's arena goes; its counts join the archive, so they still count."""
        from prometheus_client import multiprocess

        from service.metrics import archive_dead

        (self.folder / f"arena-{pid}").unlink(missing_ok=True)
        multiprocess.mark_process_dead(pid, str(self.metrics))  # type: ignore[no-untyped-call]
        try:
            archive_dead(str(self.metrics), pid)
        except Exception:  # its files then stay where they are, and still count
            log.exception("archiving the metrics of front end %d failed", pid)

    def _stop(self, signum: int, _: object) -> None:
        self.stopping = True

    def _shut_down(self) -> int:
        log.info("stopping: front ends first, then the executor")
        codes = [_stop_child(frontend) for frontend in self.frontends]
        codes.append(_stop_child(self.executor))
        return 0 if all(code == 0 for code in codes) else 1


def _stop_child(child: Child) -> int:
    process = child.process
    if process is None:
        return 0
    child.signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code != 0:
        log.error("%s stopped with exit status %s", child.name, code)
    return code
