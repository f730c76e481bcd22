"""Choosing the answer from a study's trials, for each goal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from .studies import DUPLICATE_OF


def feasible(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values()) \
        and bool(trial.constraints)


def _speedup(trial: FrozenTrial) -> float:
    return trial.user_attrs["speedup"]


def _loss(trial: FrozenTrial) -> float:
    return trial.user_attrs["loss"]


def _originals(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if feasible(t) and DUPLICATE_OF not in t.user_attrs]


@dataclass(frozen=True)
class Choice:
    trial: FrozenTrial | None  # None: no feasible trial at all
    met: bool | None  # whether the requirement is met (None in max-speedup mode)


def fastest_feasible(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """Highest speedup; ties go to the lower loss, then the earlier trial."""
    candidates = _originals(trials)
    if not candidates:
        return None
    return min(candidates, key=lambda t: (-_speedup(t), _loss(t), t.number))


def meeting_requirement(trials: Iterable[FrozenTrial], required: float) -> Choice:
    """Lowest loss among feasible trials reaching `required`; else the closest (fastest)."""
    trials = list(trials)
    reaching = [t for t in _originals(trials) if _speedup(t) >= required]
    if reaching:
        return Choice(min(reaching, key=lambda t: (_loss(t), -_speedup(t), t.number)), True)
    return Choice(fastest_feasible(trials), False)


def choose(trials: Iterable[FrozenTrial], required: float | None) -> Choice:
    if required is None:
        return Choice(fastest_feasible(trials), None)
    return meeting_requirement(trials, required)


def overall(choices: Sequence[Choice], required: float | None) -> tuple[int | None, Choice]:
    """The answer across combos: (index of the winning combo's choice, or None; the choice)."""
    best = choose([c.trial for c in choices if c.trial is not None], required)
    if best.trial is None:
        return None, best
    return next(i for i, c in enumerate(choices) if c.trial is best.trial), best


def pareto_front(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Feasible trials that no other feasible trial beats on both speedup and loss."""
    candidates = _originals(trials)
    front = [t for t in candidates
             if not any(_speedup(o) >= _speedup(t) and _loss(o) <= _loss(t)
                        and (_speedup(o) > _speedup(t) or _loss(o) < _loss(t))
                        for o in candidates)]
    return sorted(front, key=_speedup)
