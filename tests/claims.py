"""Claiming queued trials in a process of its own (test_reliability.py). A module of its own,
with no torch: each spawned process imports only what a claim needs."""

from __future__ import annotations

import optuna


def claim_all(url: str, found) -> None:
    """Claim queued trials of study "queue" until none is left, as a worker's ask() does."""
    from tuner.search.studies import open_storage

    study = optuna.load_study(study_name="queue", storage=open_storage(url))
    claimed = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:  # noqa: SLF001
        claimed.append(trial_id)
    found.put(claimed)
