"""Whether an answer is final: the run behind it is complete, was interrupted (and where), or
is still going.

Read from the marks each `tuner run` process writes on the studies it works on, whenever its
phase changes (record.RunMark): searching a combo, racing its answer, the overall race, the
held-out loss pass, ended. A process stopped by Ctrl-C or SIGTERM writes which signal stopped
it and the trial it re-queued; one that is killed writes nothing more, and its process is gone.

* in progress: a process whose latest mark is neither ended nor stopped is alive. On this host
  that is checked by its process id; a process on another host cannot be checked from here and
  counts as alive (until a run on these studies marks them again).
* interrupted: otherwise, a study whose latest mark is not "ended": where is said by the
  latest such mark.
* complete: every marked study's latest mark is "ended".

Studies written before runs marked them give no status (None), and nothing is said.

No torch and no Optuna import: `tuner show` and the report read it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .record import (ENDED, HELD_OUT, OVERALL, RACE, RACED, SEARCH, RunMark, StudyRecord,
                     TrialRecord)

COMPLETE, INTERRUPTED, IN_PROGRESS = "complete", "interrupted", "in progress"
STATES = (COMPLETE, INTERRUPTED, IN_PROGRESS)
STOPS = {"SIGINT": "interrupted (Ctrl-C)", "SIGTERM": "terminated (SIGTERM)"}


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has id `pid`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def alive(worker: dict) -> bool:
    """Whether a worker (host and pid) is alive, as far as this host can tell: one of another
    host counts as alive."""
    return worker.get("host") != socket.gethostname() or pid_alive(int(worker["pid"]))


@dataclass(frozen=True)
class Status:
    state: str  # COMPLETE, INTERRUPTED or IN_PROGRESS
    phase: str | None = None  # the phase the run was in (record.PHASES), unless complete
    where: str | None = None  # that phase in words: "during deepcache's search, at ..."
    to_go: tuple[str, ...] = ()  # the run's combos not searched yet
    signal: str | None = None  # SIGINT or SIGTERM when a signal stopped it
    requeued: int | None = None  # the trial that was running then, queued to run again
    worker: dict | None = None  # the process (host and pid) that was, or is, working
    gone: bool = False  # was in progress when written; its process has ended since

    @property
    def final(self) -> bool:
        return self.state == COMPLETE

    def as_dict(self) -> dict:
        return {"final": self.final, "state": self.state, "phase": self.phase,
                "where": self.where, "to_go": list(self.to_go), "signal": self.signal,
                "requeued_trial": self.requeued, "worker": self.worker, "gone": self.gone}

    @classmethod
    def from_dict(cls, data: dict) -> Status:
        if data["state"] not in STATES:
            raise ValueError(f"unknown run state {data['state']!r}")
        for key in ("phase", "where", "signal"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise TypeError(f"status {key} is {data[key]!r}, not text")
        requeued = data.get("requeued_trial")
        if requeued is not None and (isinstance(requeued, bool) or not isinstance(requeued, int)):
            raise TypeError(f"status requeued_trial is {requeued!r}, not a trial number")
        worker = data.get("worker")
        if worker is not None and not (isinstance(worker, dict)
                                       and isinstance(worker.get("host"), str)
                                       and isinstance(worker.get("pid"), int)):
            raise TypeError(f"status worker is {worker!r}, not a host and a process id")
        if not isinstance(data.get("to_go") or [], list):
            raise TypeError(f"status to_go is {data['to_go']!r}, not a list of combos")
        return cls(data["state"], data.get("phase"), data.get("where"),
                   tuple(str(c) for c in data.get("to_go") or ()), data.get("signal"),
                   requeued, worker, bool(data.get("gone")))

    def rechecked(self) -> Status:
        """As written, unless it says in progress and its process, on this host, has ended
        since: then interrupted (a results file keeps what was true when it was written)."""
        if self.state != IN_PROGRESS or not self.worker or alive(self.worker):
            return self
        return replace(self, state=INTERRUPTED, gone=True)

    def _to_go(self) -> str:
        return f"; {', '.join(self.to_go)} still to search" if self.to_go else ""

    @property
    def _where(self) -> str:
        return f" {self.where}" if self.where else ""

    def text(self) -> str:
        """One line for the table, `tuner show` and the report."""
        if self.state == COMPLETE:
            return "Final: the run that wrote this answer completed."
        if self.state == IN_PROGRESS:
            return f"Not final: a run is still going{',' if self.where else ''}{self._where}" \
                f"{self._to_go()}."
        if self.gone:
            how = (f"the run was still going when this was written{',' if self.where else ''}"
                   f"{self._where}{self._to_go()}, and its process has ended since")
        else:
            stop = STOPS.get(self.signal or "", "stopped (its process ended without finishing)")
            how = f"the run was {stop}{self._where}{self._to_go()}"
        return f"Not final: {how}; rerun the same command to resume."

    def stop_text(self) -> str:
        """What was stopped and what a rerun does, for the run that is stopping."""
        word = "terminated" if self.signal == "SIGTERM" else "interrupted"
        if self.requeued is not None:
            then = (f"trial {self.requeued}, which was running, was marked failed and is "
                    f"queued to run again")
        else:
            then = "no trial was running; " + {
                RACE: "the rerun races again", OVERALL: "the rerun races again",
                HELD_OUT: "the rerun measures it again",
            }.get(self.phase, "the rerun goes on from here")
        return f"{word}{self._where}: {then}{self._to_go()}."


def _where(mark: RunMark, evaluated: dict[str, int]) -> str:
    if mark.phase == SEARCH:
        at = min(evaluated.get(mark.combo, 0) + 1, mark.trials)
        return f"during {mark.combo}'s search, at evaluation {at} of {mark.trials}"
    return {RACE: f"during {mark.combo}'s race", RACED: f"after {mark.combo}'s race",
            OVERALL: "during the overall race", HELD_OUT: "during the held-out loss pass",
            }.get(mark.phase, mark.phase)


def _status(mark: RunMark, state: str, evaluated: dict[str, int]) -> Status:
    to_go = ()
    if mark.combo in mark.combos and mark.phase in (SEARCH, RACE, RACED):
        to_go = mark.combos[mark.combos.index(mark.combo) + 1:]
    return Status(state, mark.phase, _where(mark, evaluated), tuple(to_go), mark.stopped,
                  mark.requeued, mark.worker)


def status_of(studies: Sequence[tuple[StudyRecord, Sequence[TrialRecord]]]) -> Status | None:
    """The status of the answer these studies give (module docstring); None when no run
    marked them."""
    evaluated = {record.combo: sum(t.evaluated for t in trials) for record, trials in studies}
    processes: dict[str, RunMark] = {}  # each process's latest mark
    open_marks = []  # studies' latest marks that are not "ended"
    for record, _ in studies:
        for mark in record.runs:
            if mark.key not in processes or mark.at > processes[mark.key].at:
                processes[mark.key] = mark
        if record.runs and record.runs[-1].phase != ENDED:
            open_marks.append(record.runs[-1])
    if not processes:
        return None
    live = [m for m in processes.values()
            if m.phase != ENDED and m.stopped is None and alive(m.worker)]
    if live:
        return _status(max(live, key=lambda m: m.at), IN_PROGRESS, evaluated)
    if open_marks:
        latest = max(open_marks, key=lambda m: m.at)
        return _status(processes[latest.key], INTERRUPTED, evaluated)
    return Status(COMPLETE)


__all__ = ["COMPLETE", "INTERRUPTED", "IN_PROGRESS", "STATES", "Status", "alive", "pid_alive",
           "status_of"]
