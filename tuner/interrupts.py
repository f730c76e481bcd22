"""Stopping a run: Ctrl-C (SIGINT) and SIGTERM are requests, acted on where the code can stop.

A signal handler that raises throws its exception between any two bytecodes of the main
thread, including inside a library's finalizer (`__del__`), where it cannot propagate: Python
prints "Exception ignored in ..." with a traceback and goes on, and the stop is lost. So while
`deferred()` is in force the handler only records the first signal, and `checkpoint()` raises
`Terminated` for it at points the code chose: before every pipeline call and after each of its
denoising steps, at the start of a trial, between trials, between the steps of loading, and in
every polling wait (`sleep`). This is deferred cancellation, as POSIX threads have it
(`PTHREAD_CANCEL_DEFERRED`: a cancel request takes effect only at a cancellation point).

`Terminated` is a KeyboardInterrupt, so whatever handles Ctrl-C (the running trial marked
interrupted and re-queued, "Resume with:") handles SIGTERM alike; `exit_code` is 128 plus the
signal's number (130 for Ctrl-C, 143 for SIGTERM). Signals after the first are ignored while it
is handled: Slurm signals every process of a job step, a launcher forwards the signal to its
workers too, and a second stop would break the re-queuing of the running trial.

Handlers can be set only in the main thread; elsewhere `deferred()` changes nothing. A signal
the process ignores (SIG_IGN, as SIGINT is in a shell's background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SLICE = 0.05  # seconds: the longest a `sleep` goes without looking for a request


class Terminated(KeyboardInterrupt):
    """A stop requested by `signum`, raised at a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def word(self) -> str:
        return "interrupted" if self.signum == signal.SIGINT else "terminated"


class Request:
    """The first stop signal received while deferred, and whether a checkpoint acted on it."""

    def __init__(self):
        self.signum: int | None = None
        self.raised = False

    def note(self, signum, frame) -> None:  # the signal handler: records, never raises
        if self.signum is None:
            self.signum = signum

    @property
    def pending(self) -> bool:
        return self.signum is not None and not self.raised

    def exit_code(self, rc: int) -> int:
        """`rc`, or the signal's exit code where `rc` says the run was interrupted (130)."""
        return 128 + self.signum if self.signum is not None and rc == 130 else rc


_request: Request | None = None  # while deferred(), in the main thread


@contextlib.contextmanager
def deferred() -> Iterator[Request]:
    """While inside, SIGINT and SIGTERM are recorded instead of raised; yields the `Request`.

    Reentrant: an inner `deferred()` yields the outer one's request and changes nothing. When
    the outermost one ends normally with a request that no checkpoint acted on, it raises
    `Terminated` there (a stop is never lost). On the way out the previous handlers are put
    back, but after a SIGTERM SIGTERM stays ignored.
    """
    global _request
    if _request is not None or threading.current_thread() is not threading.main_thread():
        yield _request or Request()
        return
    request = Request()
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _request = request
    try:
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, request.note)
        yield request
        checkpoint()
    finally:
        _request = None
        for signum, handler in previous.items():
            # Terminated, a process is on its way out: a later SIGTERM (Slurm sends them
            # again) would only kill it mid-cleanup. Ctrl-C gets its handler back.
            stopping = request.signum == signum == signal.SIGTERM
            signal.signal(signum, signal.SIG_IGN if stopping else handler)


def checkpoint() -> None:
    """Raise `Terminated` if a stop was requested and not yet acted on; else nothing."""
    request = _request
    if request is not None and request.pending:
        request.raised = True
        raise Terminated(request.signum)


def sleep(seconds: float) -> None:
    """`time.sleep`, a checkpoint every `SLICE` seconds (a recorded signal does not cut a
    sleep short, as a raising handler did)."""
    deadline = time.monotonic() + seconds
    while True:
        checkpoint()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, SLICE))


__all__ = ["Request", "Terminated", "checkpoint", "deferred", "sleep"]
