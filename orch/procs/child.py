"""The supervisor's agent: its output streamed to a capped log, a bounded part kept.

An agent may print anything, hundreds of megabytes included. The supervisor's memory
must stay flat (SPEC section 5): `AgentChild` reads the agent's stdout and stderr in a
thread, writes both to the run's log through a `CappedLog`, and keeps of stdout only a
bounded head and tail for parsing (`HeadTail`). The log keeps its first half of
`log_max_mb` as it comes and the last half in a spill file used as a ring, so a cut
log is its head, one line saying how much was cut there, and its tail.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO

MIB = 1024 * 1024
PARSE_HEAD_BYTES = 64 * 1024      # a Codex session id comes in the first event
PARSE_TAIL_BYTES = 2 * MIB        # Claude's result object is the last line
_READ = 65536


class HeadTail:
    """The first `head` and the last `tail` bytes of a stream, whatever its length."""

    def __init__(self, head: int = PARSE_HEAD_BYTES, tail: int = PARSE_TAIL_BYTES) -> None:
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        """Head and tail as text; when bytes were dropped between them, the tail starts
        at a line break so no half line is parsed, and a line break joins the two."""
        if self.total <= self.head_limit + self.tail_limit:
            return bytes(self.head + self.tail).decode("utf-8", "replace")
        tail = bytes(self.tail)
        cut = tail.find(b"\n")
        tail = tail[cut + 1:] if cut >= 0 else b""
        return (bytes(self.head) + b"\n" + tail).decode("utf-8", "replace")


class CappedLog:
    """Writes to `fd` (the run's log) up to `max_bytes` in all: the first half as it
    comes, then the last half through a ring in a spill file; `close()` appends the
    ring behind a line saying where the log was cut and how much."""

    def __init__(self, fd: int, max_bytes: int, spill_dir: Path | None = None) -> None:
        self.fd = fd
        self.head_limit = max_bytes // 2
        self.ring_size = max(1, max_bytes - self.head_limit)
        self.max_bytes = max_bytes
        self.written = 0          # bytes written straight to the log
        self.ringed = 0           # bytes that went to the ring
        self._spill_dir = spill_dir
        self._ring: IO[bytes] | None = None

    def write(self, data: bytes) -> None:
        room = self.head_limit - self.written
        if room > 0:
            part = data[:room]
            _write_all(self.fd, part)
            self.written += len(part)
            data = data[room:]
        if data:
            self._to_ring(data)

    def _to_ring(self, data: bytes) -> None:
        if self._ring is None:
            # closed by close(); a temporary file vanishes with a killed supervisor
            self._ring = tempfile.TemporaryFile(  # noqa: SIM115
                dir=self._spill_dir, prefix=".orch-log-tail-")
        if len(data) > self.ring_size:  # only its end can survive
            self.ringed += len(data) - self.ring_size
            data = data[-self.ring_size:]
        while data:
            at = self.ringed % self.ring_size
            part = data[: self.ring_size - at]
            os.pwrite(self._ring.fileno(), part, at)
            self.ringed += len(part)
            data = data[len(part):]

    def close(self) -> None:
        """Append the ring (in order) to the log, after a line saying what was cut."""
        if self._ring is None:
            return
        ring = self._ring.fileno()
        if self.ringed <= self.ring_size:
            _copy_range(ring, self.fd, 0, self.ringed)
        else:
            cut = self.ringed - self.ring_size
            _write_all(self.fd, (
                f"\n[orch: the log is capped at log_max_mb {self.max_bytes // MIB}: "
                f"{cut} bytes of output were cut here; the last {self.ring_size} bytes "
                "follow]\n").encode())
            start = self.ringed % self.ring_size
            _copy_range(ring, self.fd, start, self.ring_size - start)
            _copy_range(ring, self.fd, 0, start)
        self._ring.close()
        self._ring = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            done = os.write(fd, view)
        except OSError:
            return  # the log is gone (disk full, removed): the run goes on
        view = view[done:]


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    while length > 0:
        chunk = os.pread(src, min(_READ * 16, length), offset)
        if not chunk:
            return
        _write_all(dst, chunk)
        offset += len(chunk)
        length -= len(chunk)


def log_dir_of(fd: int = 1) -> Path | None:
    """The folder of the regular file open at `fd` (the supervisor's log), if any."""
    try:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None
    return target.parent if target.is_file() else None


class AgentChild:
    """The agent, started by the supervisor in the supervisor's process group: stdout
    and stderr go to the capped log (fd 1 unless told), a head and tail of stdout are
    kept for parsing, the prompt (if any) is fed to stdin from a thread."""

    def __init__(self, argv: list[str], *, cwd: str, env: dict[str, str],
                 stdin_text: str | None, log_max_bytes: int = 100 * MIB,
                 log_fd: int = 1) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, close_fds=True,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log = CappedLog(log_fd, log_max_bytes, log_dir_of(log_fd))
        self.stdout = HeadTail()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        if stdin_text is not None and self.proc.stdin is not None:
            from orch.procs.run import _feed_stdin

            threading.Thread(target=_feed_stdin, args=(self.proc.stdin, stdin_text),
                             daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        """Copy both pipes to the log until both are at EOF (every writer gone)."""
        selector = selectors.DefaultSelector()
        for pipe, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            if pipe is not None:
                selector.register(pipe.fileno(), selectors.EVENT_READ, name)
        while selector.get_map():
            for key, _ in selector.select():
                data = os.read(key.fd, _READ)
                if not data:
                    selector.unregister(key.fd)
                    continue
                self.log.write(data)
                if key.data == "out":
                    self.stdout.add(data)
        selector.close()

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self, drain_s: float = 5.0) -> tuple[int | None, str]:
        """Wait for the agent, read what is left of its output (a process that still
        holds a pipe after the run's tree was ended is not waited for past `drain_s`),
        close the log; (exit code, the kept stdout as text)."""
        self.proc.wait()
        self._reader.join(timeout=drain_s)
        if not self._reader.is_alive():
            self.log.close()
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        return self.proc.returncode, self.stdout.text()
