"""`search_params.json`: the chosen settings, merged per setting and goal, written atomically.

Layout::

    {"format": 1,
     "settings": {
       "<pipe>|<scheduler>|<steps> steps|<H>x<W>|batch <B>|<device>": {
         "setting": {...}, "device": "NVIDIA H100 80GB HBM3",
         "max_speedup" | "req_speedup": {
           "goal": {...}, "required_speedup": 2.5 | null, "met": true | false | null,
           "chosen": <result> | null,
           "per_combo": {"deepcache": <result> | null, ...}}}}}

    <result> = {"combo", "params": {accelerator: {knob: value}}, "speedup", "loss", "clip_loss",
                "latency", "baseline_latency", "clip_score", "baseline_clip_score", "psnr",
                "ssim", "study", "trial"}
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from optuna.trial import FrozenTrial

FORMAT = 1


class ResultsError(ValueError):
    """The results file exists but cannot be used; it is left untouched."""


def read(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        return {"format": FORMAT, "settings": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"cannot read results file {str(path)!r}: {err}; "
                           f"fix or move it (it was not overwritten)") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise ResultsError(f"results file {str(path)!r} is not a tuner results file "
                           f"(no 'settings'); fix or move it (it was not overwritten)")
    return data


def write_atomically(path: str | Path, text: str) -> None:
    """Replace `path` in one step: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file (mkstemp's is private)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write(path: str | Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=2) + "\n")


def result(trial: FrozenTrial | None, *, combo: str, study: str,
           baseline_clip: float) -> dict | None:
    if trial is None:
        return None
    a = trial.user_attrs
    return {
        "combo": combo, "params": a["config"],
        **{k: a[k] for k in ("speedup", "loss", "clip_loss", "latency", "baseline_latency",
                             "clip_score", "psnr", "ssim")},
        "baseline_clip_score": baseline_clip, "study": study, "trial": trial.number,
    }


def merge(path: str | Path, key: str, entry: dict, mode: str, mode_entry: dict) -> dict:
    """Put one goal's answer for one setting into the file, keeping everything else."""
    data = read(path)
    data["format"] = FORMAT
    slot = data["settings"].setdefault(key, {})
    slot.update(entry)
    slot[mode] = mode_entry
    write(path, data)
    return data
