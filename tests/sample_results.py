"""A results file written the way `tuner run` writes it, from hand-made answers."""

from __future__ import annotations

from pathlib import Path

from tuner.answer import Answer, Choice, ComboAnswer
from tuner.record import QualityEstimate, SpeedEstimate
from tuner.search.results import merge
from tuner.setting import Goal, Setting
from tuner.stats import Interval

SD15 = Setting(pipe="SD1.5", scheduler="DDIM", steps=50, height=512, width=512, batch_size=4,
               num_samples=32, seed=42, device="NVIDIA H100",
               clip_model="openai/clip-vit-large-patch14", prompts="0123456789")
SD21 = Setting(pipe="SD2.1", scheduler="DDIM", steps=50, height=768, width=768,
               device="NVIDIA H100")
FASTEST, REQUIRED = Goal(loss_budget=0.02), Goal(loss_budget=0.02, req_speedup=1.5)
TIGHT = Goal(loss_budget=0.001)
DEEPCACHE = {"deepcache": {"cache_interval": 3, "cache_branch_id": 1}}
TOME = {"deepcache": {"cache_interval": 2, "cache_branch_id": 0},
        "tome": {"ratio": 0.4, "max_downsample": 1}}


def choice(combo: str, config: dict, speedup: float, loss: float, trial: int,
           confirmed: str | None = "race1") -> Choice:
    interval = Interval(loss, loss - 0.003, loss + 0.003, 32)
    return Choice(combo, f"study of {combo}", trial, config,
                  SpeedEstimate(Interval(speedup, speedup * 0.99, speedup * 1.01, 4), 0.5, 4),
                  QualityEstimate("clip", interval, 30.0, interval, 30.0, 0.95, 32), confirmed)


def write_results(path: Path, *, model: str | None = None) -> Path:
    dc = choice("deepcache", DEEPCACHE, 2.25, 0.011, 7)
    tome = choice("deepcache+tome", TOME, 1.9, 0.004, 3)
    combos = (ComboAnswer("deepcache", dc.study, dc, 12, 4, False),
              ComboAnswer("deepcache+tome", tome.study, tome, 30, 11, False))
    merge(path, Answer(SD15, FASTEST, None, combos, dc, None), model={"unet": model or "x"})
    merge(path, Answer(SD15, REQUIRED, 1.5, combos, tome, True))
    merge(path, Answer(SD21, TIGHT, None, (ComboAnswer("deepcache", "s", None, 5, 0, False),),
                       None, None))
    return path
