"""The role of a process in a run: what it does, said once (the worker protocol's rules 6 and 7,
workers.py), instead of asked of its worker index wherever it matters.

- `Alone`: `tuner run` in one process (also each host's process on a shared storage, which
  knows of no other): it runs trials, races the answers, writes the results file and speaks.
- `Launcher`: `tuner run --workers N`: it starts the workers and follows them, runs no trial
  and loads no model, and writes the results file from the stored records once they are done.
- `Worker`: worker k of a launcher: it runs trials, silently; worker 0 also races the answers.

No heavy imports: the command line builds a role before anything is loaded.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Role(ABC):
    """What a process does. `index`: its index among a launcher's workers (None otherwise),
    which picks its sampler stream (workers.worker_seed)."""

    searches: ClassVar[bool]  # loads the model and runs trials
    races: ClassVar[bool]  # confirms the answers: races their candidates (rule 6)
    writes_results: ClassVar[bool]  # writes the results file, and answers at once (rule 7)
    speaks: ClassVar[bool]  # prints notes, progress, the answer and how to resume
    index: ClassVar[int | None] = None


@dataclass(frozen=True)
class Alone(Role):
    searches, races, writes_results, speaks = True, True, True, True


@dataclass(frozen=True)
class Launcher(Role):
    workers: int
    searches, races, writes_results, speaks = False, False, True, True


@dataclass(frozen=True)
class Worker(Role):
    index: int
    searches, writes_results, speaks = True, False, False

    @property
    def races(self) -> bool:  # one process races: worker 0
        return self.index == 0


def role_of(*, workers: int, worker: int | None) -> Role:
    """The role of a process started with --workers `workers` and --worker `worker` (which a
    launcher passes to the processes it starts)."""
    if worker is not None:
        return Worker(worker)
    return Launcher(workers) if workers > 1 else Alone()


__all__ = ["Alone", "Launcher", "Role", "Worker", "role_of"]
