"""What a measurement depends on (`Setting`) and what a search is for (`Goal`).

Small value objects with no heavy imports: the results readers use them without torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from .codes import Code

LOSS_METRICS = ("clip", "ssim")
LOSS_BOUNDS = ("estimate", "upper")


def _known(cls, data: dict) -> dict:
    """The items of `data` that are fields of `cls` (files written by later versions may hold
    more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def prompts_id(prompts: Sequence[str]) -> str:
    """A short fingerprint of an ordered list of prompts."""
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:10]


@dataclass(frozen=True, kw_only=True)
class Setting:
    """Everything that changes a trial's numbers, for a given model.

    Two runs with equal settings measure the same thing and share their studies; any field that
    differs gives other studies and another entry in the results file.
    """

    pipe: str
    scheduler: str
    steps: int
    height: int
    width: int
    batch_size: int = 4
    num_samples: int = 32
    seed: int = 42
    guidance_scale: float = 7.5
    device: str = ""  # the GPU's name: speedups differ from one GPU to another
    clip_model: str = ""  # the CLIP that scores the images
    prompts: str = ""  # prompts_id() of the prompts scored

    @property
    def parts(self) -> list[str]:
        """Readable parts, in the order of the key and of the study names."""
        return [p for p in (
            self.pipe, self.scheduler, f"{self.steps} steps", f"{self.height}x{self.width}",
            f"batch {self.batch_size}", f"{self.num_samples} samples", f"seed {self.seed}",
            f"guidance {self.guidance_scale:g}" if self.guidance_scale != 7.5 else "",
            f"prompts {self.prompts}" if self.prompts else "",
            f"clip {self.clip_model}" if self.clip_model else "", self.device) if p]

    @property
    def key(self) -> str:
        """A readable identifier, e.g. `SD1.5|DDIM|50 steps|512x512|batch 4|32 samples|...`."""
        return "|".join(self.parts)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Setting:
        return cls(**_known(cls, data))


class Mode(Code):
    """What a goal asks for (`Goal.mode`): the fastest configuration within the budget, or the
    one that reaches a required speedup (or latency) with the lowest loss."""

    MAX_SPEEDUP = "max_speedup"
    REQ_SPEEDUP = "req_speedup"


@dataclass(frozen=True, kw_only=True)
class Goal:
    """What the search is for.

    With no requirement: maximise speedup under the loss budget, and pick the fastest feasible
    configuration (`--full-front` makes loss a second objective, for the whole Pareto front:
    search/studies.objectives). With a required speedup (or latency,
    turned into a speedup against the measured plain latency): maximise speedup under the
    budget, and pick the feasible configuration that reaches the requirement with the lowest
    loss.

    Feasible means: the loss estimate is within the budget (`loss_bound="estimate"`), or the
    upper end of its 95 % interval is (`"upper"`, for users who want the budget held with
    confidence).
    """

    loss_budget: float = 0.02
    metric: str = "clip"
    req_speedup: float | None = None
    req_time: float | None = None
    loss_bound: str = "estimate"

    @property
    def mode(self) -> Mode:
        return Mode.MAX_SPEEDUP if self.req_speedup is None and self.req_time is None \
            else Mode.REQ_SPEEDUP

    @property
    def loss_name(self) -> str:
        return f"{self.metric}_loss"

    def reaches(self, speedup: float, baseline_latency: float) -> bool | None:
        """Whether a speedup measured against this plain latency meets the requirement (None
        without one): for --req-time, the accelerated latency shown must be within it."""
        if self.req_speedup is not None:
            return speedup >= self.req_speedup
        if self.req_time is not None:
            return baseline_latency / speedup <= self.req_time
        return None

    def required_speedup(self, baseline_latency: float | None) -> float | None:
        """The speedup to reach: given, or `req_time` against the plain latency."""
        if self.req_speedup is not None:
            return self.req_speedup
        if self.req_time is not None and baseline_latency:
            return baseline_latency / self.req_time
        return None

    @property
    def requirement(self) -> str:
        if self.req_speedup is not None:
            return f"speedup >= {self.req_speedup:g}x"
        if self.req_time is not None:
            return f"latency <= {self.req_time:g}s"
        return ""

    @property
    def budget(self) -> str:
        bound = " (upper bound)" if self.loss_bound == "upper" else ""
        return f"{self.metric} loss <= {self.loss_budget:g}{bound}"

    @property
    def key(self) -> str:
        """Everything that changes the answer: e.g. `fastest | clip loss <= 0.02`."""
        return " | ".join([self.requirement or "fastest", self.budget])

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Goal:
        return cls(**_known(cls, data))


__all__ = ["LOSS_BOUNDS", "LOSS_METRICS", "Goal", "Mode", "Setting", "prompts_id"]
