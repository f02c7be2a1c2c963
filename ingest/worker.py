"""Run extraction in a separate process with a time and memory bound.

One hostile file (a decompression bomb, a cyclic object graph, a page that never ends)
can then neither hang nor exhaust the machine: the worker is killed and restarted, the
file is reported with a clear reason, and ingestion goes on.  The worker also lets the
main process embed one document while the next one is being read (two cores, both busy).
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from typing import BinaryIO

from ingest.extract import ExtractOptions, Extracted, extract_document
from ingest.reader import ReadError

_HEADER = struct.Struct("!Q")
_GRACE_S = 2.0  # how much longer the parent waits than the worker's own timer
_STARTUP_S = 30.0  # and, for a fresh worker's first job, for its start (interpreter, imports)


def _write_message(stream: BinaryIO, value) -> None:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        block = stream.read(size - len(data))
        if not block:
            raise EOFError("the other side closed the pipe")
        data.extend(block)
    return bytes(data)


def _read_message(stream: BinaryIO):
    (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    return pickle.loads(_read_exactly(stream, size))


def _limit_memory(memory_mb: int) -> None:
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class _JobTimeout(BaseException):
    """Raised in the worker when a job overruns; a BaseException, so that no broad
    ``except Exception`` inside a parser can swallow it and carry on."""


def _on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _JobTimeout()


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the process that started it dies (a killed
    ingest must not leave a worker chewing on a hostile file).  Best effort."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _timeout_reason(timeout_s: float) -> str:
    return f"reading took longer than {timeout_s:g} s: stopped and skipped"


def _extract_one(job, timeout_s: float = 0.0) -> tuple[str, object]:
    data, doc_id, options, memory_mb = job
    if timeout_s > 0:  # the bound counts from the start of this file's extraction
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return "ok", extract_document(data, doc_id, options)
    except _JobTimeout:
        return "error", _timeout_reason(timeout_s)
    except ReadError as error:
        return "error", str(error)
    except MemoryError:
        return "error", f"needs more memory than allowed ({memory_mb} MB) to read: refused"
    except RecursionError:
        return "error", "corrupt PDF: objects nested too deeply to read"
    except Exception as error:  # any other parser failure is a property of the file
        return "error", f"could not be read ({type(error).__name__}: {' '.join(str(error).split())[:120]})"
    finally:
        if timeout_s > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)


def serve(memory_mb: int, timeout_s: float = 0.0) -> None:
    """The worker's loop: read jobs on stdin, write results on stdout, until EOF.

    Each job runs under ``timeout_s`` (measured here, from the start of the job) and the
    whole process under an address-space limit of ``memory_mb``; the parent keeps its own
    timeout as a backstop for a hang that no signal handler can interrupt.
    """
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the reply stream
    _die_with_parent()
    _limit_memory(memory_mb)
    signal.signal(signal.SIGALRM, _on_alarm)
    while True:
        try:
            job = _read_message(requests)
        except EOFError:
            return
        try:
            reply = _extract_one(job, timeout_s)
        except _JobTimeout:  # the alarm fired between the job's end and the timer's reset
            reply = ("error", _timeout_reason(timeout_s))
        _write_message(replies, reply)


class ExtractionWorker:
    """A restartable worker process.  ``submit`` a job, then ``result`` waits for it."""

    def __init__(self, options: ExtractOptions, timeout_s: float, memory_mb: int):
        self.options = options
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._process: subprocess.Popen | None = None
        self._busy = False
        self._fresh = False  # the job in progress is the first of a newly started process

    def _start(self) -> None:
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ingest.worker", str(self.memory_mb), str(self.timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=environment,
            cwd=os.getcwd(),
        )
        self._fresh = True

    def submit(self, data: bytes, doc_id: str) -> None:
        if self._process is None or self._process.poll() is not None:
            self._start()
        assert self._process is not None and self._process.stdin is not None
        try:
            _write_message(self._process.stdin, (data, doc_id, self.options, self.memory_mb))
        except (BrokenPipeError, OSError):
            self._discard()  # result() reports it
        self._busy = True

    def result(self) -> Extracted:
        """The extraction of the job submitted last, or ``ReadError`` with the reason."""
        assert self._busy
        self._busy = False
        process = self._process
        if process is None or process.stdout is None:
            raise ReadError("the reader process could not be started")
        # The worker stops an overrunning job itself; this wait (counted from now, when the
        # job has already been running a while) is the backstop for a hang in C code.
        wait = self.timeout_s + _GRACE_S + (_STARTUP_S if self._fresh else 0.0)
        self._fresh = False
        ready, _, _ = select.select([process.stdout], [], [], wait)
        if not ready:
            self._discard()
            raise ReadError(_timeout_reason(self.timeout_s))
        try:
            status, payload = _read_message(process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            try:  # the pipe closes a moment before the exit status is there to read
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            self._discard()
            raise ReadError(f"the reader crashed on this file (exit code {code}); skipped") from None
        if status == "error":
            raise ReadError(payload)
        return payload

    def _discard(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            for stream in (self._process.stdin, self._process.stdout):
                if stream:
                    stream.close()
        self._process = None

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.stdin.close()  # EOF: the worker exits
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._discard()

    def __enter__(self) -> "ExtractionWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    serve(
        int(sys.argv[1]) if len(sys.argv) > 1 else 0,
        float(sys.argv[2]) if len(sys.argv) > 2 else 0.0,
    )
