"""`search_params.json`: the answers, one per setting and goal, merged and written atomically.

Layout (format 2)::

    {"format": 2,
     "settings": {
       "<setting key>": {                # Setting.key: model, scheduler, steps, size, batch,
         "setting": {...},               # samples, seed, prompts, CLIP model, device
         "model": {"unet": "<fingerprint>"},
         "answers": {
           "<goal key>": <answer>}}}}    # Goal.key, e.g. "fastest | clip loss <= 0.02"

    <answer> = answer.Answer.as_dict(): the goal, required_speedup, met, chosen (combo,
               params, speed and quality with their intervals, the headline numbers),
               per_combo, and status: whether the answer is final, its run complete,
               interrupted (where) or in progress (status.Status.as_dict; null when the
               studies did not say).

Several processes may merge into one file at once (workers on one host, runs sharing a
folder): the read-merge-write happens under an exclusive lock on the file's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..answer import Answer
from ..setting import Setting

FORMAT = 2


class ResultsError(ValueError):
    """The results file exists but cannot be used; it is left untouched."""


def _shape_error(path: Path, where: str) -> ResultsError:
    return ResultsError(f"results file {str(path)!r} is not a tuner results file ({where}); "
                        f"fix or move it (tuner leaves it as it is)")


def _check_shape(path: Path, data) -> None:
    """The whole structure, checked before any work, so that a bad file stops a run at once
    rather than after all its trials."""
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise _shape_error(path, "no 'settings' object")
    if data.get("format") != FORMAT:
        raise ResultsError(f"results file {str(path)!r} has format {data.get('format')!r}, "
                           f"this tuner writes format {FORMAT}; move it away and run again "
                           f"(tuner leaves it as it is)")
    for key, slot in data["settings"].items():
        if not isinstance(slot, dict) or not isinstance(slot.get("setting"), dict) \
                or not isinstance(slot.get("answers"), dict):
            raise _shape_error(path, f"setting {key!r} is not an object with 'setting' and "
                                     f"'answers'")
        for goal, entry in slot["answers"].items():
            try:
                Answer.from_dict(Setting.from_dict(slot["setting"]), entry)
            except (TypeError, KeyError, AttributeError, ValueError) as err:
                raise _shape_error(path, f"answer {goal!r} of {key!r} is malformed: "
                                         f"{type(err).__name__} {err}") from None


def read(path: str | Path) -> dict:
    """The file's data (empty when there is no file); ResultsError when it is unusable."""
    path = Path(path)
    if not path.exists():
        return {"format": FORMAT, "settings": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"cannot read results file {str(path)!r}: {err}; "
                           f"fix or move it (tuner leaves it as it is)") from None
    _check_shape(path, data)
    return data


def answers(data: dict) -> Iterator[tuple[str, Answer]]:
    """(setting key, Answer) for every answer in the data."""
    for key, slot in data["settings"].items():
        setting = Setting.from_dict(slot["setting"])
        for entry in slot["answers"].values():
            yield key, Answer.from_dict(setting, entry)


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


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for read-modify-write of `path`, across processes of this host.

    The lock is taken on the folder that holds `path`, which leaves nothing behind: a lock
    file beside the results would stay there, as it cannot be removed safely while another
    process may be waiting on it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def merge(path: str | Path, answer: Answer, *, model: dict | None = None) -> dict:
    """Put one answer into the file, keeping everything else."""
    path = Path(path)
    with locked(path):
        data = read(path)
        slot = data["settings"].setdefault(answer.setting.key, {"answers": {}})
        slot["setting"] = answer.setting.as_dict()
        if model:
            slot["model"] = model
        slot["answers"][answer.goal.key] = answer.as_dict()
        write_atomically(path, json.dumps(data, indent=2) + "\n")
    return data


__all__ = ["FORMAT", "ResultsError", "answers", "locked", "merge", "read",
           "write_atomically"]
