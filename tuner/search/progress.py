"""Where this process's run is, written on the studies it works on (record.RunMark).

Every change of phase (a combo's search, its race, past it, the overall race, the held-out
loss pass, the end) is written on every study the run has worked on so far, so that each of
them holds the run's latest mark: a reader of any of them tells a complete run from an
interrupted one, and both from one still going (tuner/status.py). A stop by a signal is written
too, with the trial it re-queued; a process killed outright leaves its last phase, and its
process id, which is gone.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone

import optuna

from ..interrupts import Terminated
from ..record import ENDED, RunMark, StudyRecord
from .workers import this_worker


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Progress:
    """The marks of one run: `enter` each phase, then `end`, or `stop` on the way out of an
    interrupt."""

    def __init__(self, combos: Sequence[str], trials: int):
        started = _now()
        self.mark = RunMark(this_worker(), started, tuple(combos), trials, "search", at=started)
        self.studies: dict[str, optuna.Study] = {}

    def enter(self, phase: str, *, combo: str | None = None,
              studies: Sequence[optuna.Study] = ()) -> None:
        """The run is now in `phase` (of `combo`), working on `studies` besides those before."""
        for study in studies:
            self.studies.setdefault(study.study_name, study)
        self._write(replace(self.mark, phase=phase, combo=combo, at=_now()))

    def requeued(self, trial: int) -> None:
        """The trial that was running when a stop came, queued to run again (objective.py)."""
        self.mark = replace(self.mark, requeued=trial)

    def stop(self, stop: KeyboardInterrupt) -> None:
        """A signal stopped the run (a KeyboardInterrupt outside `deferred` is a Ctrl-C).
        Best effort: a storage that fails now must not turn the stop into a traceback; the
        marks then say the run's process ended without finishing."""
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        with contextlib.suppress(Exception):
            self._write(replace(self.mark, stopped=signal.Signals(signum).name, at=_now()))

    def end(self) -> None:
        self._write(replace(self.mark, phase=ENDED, combo=None, at=_now()))

    def _write(self, mark: RunMark) -> None:
        self.mark = mark
        for study in self.studies.values():
            StudyRecord.write_run(study, mark)


__all__ = ["Progress"]
