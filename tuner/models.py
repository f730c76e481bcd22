"""Every name `tuner run --pipe` accepts, with its pipeline family, the combos `--combo all`
means for it, and what the numbers measured on it can mean (`tuner models`).

Reading the catalogue loads no model and imports no torch: the family of each name is known
from the tables (pipelines.MODELS and HUB_FAMILIES, the presets' architectures), and that of a
folder or a single file from its configs or keys when it is run.
"""

from __future__ import annotations

from dataclasses import dataclass

from .families import FAMILIES, Family

REAL = "real weights: every number is real (downloaded from the Hub on first use)"
TOY = ("trained toy: quality trade-offs real in kind, not in magnitude; its timings are a "
       "toy's")
RANDOM = "random weights: timing only (losses, scores and images mean nothing)"
SMALL_TEXT = ("; its text encoders are small stand-ins of the real output width: prompts are "
              "encoded once and never timed")
TINY = "random weights at toy size: for tests; no number means anything"


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One name `--pipe` accepts."""

    name: str
    family: Family
    what: str  # "alias of <hub id>", "hub id", "preset"
    meaning: str  # what its numbers can mean

    @property
    def combos(self) -> str:
        return ", ".join(self.family.combos) or "none yet"


def catalogue() -> list[Entry]:
    """The aliases, the hub ids the tuner knows, the trained presets, then the random-weight
    ones."""
    from . import presets
    from .pipelines import HUB_FAMILIES, MODELS

    entries = [Entry(name=alias, family=FAMILIES[HUB_FAMILIES[hub]], what=f"alias of {hub}",
                     meaning=REAL) for alias, hub in MODELS.items()]
    entries += [Entry(name=hub, family=FAMILIES[kind], what="hub id", meaning=REAL)
                for hub, kind in HUB_FAMILIES.items() if hub not in MODELS.values()]
    entries += [Entry(name=name, family=FAMILIES[_trained_kind(name)], what="trained preset",
                      meaning=TOY) for name in presets.TRAINED]
    for name in [*presets.ARCHITECTURES, *presets.DIT_ARCHITECTURES]:
        small_text = getattr(presets.DIT_ARCHITECTURES.get(name), "small_text", False)
        meaning = TINY if name.startswith("tiny") else RANDOM + (SMALL_TEXT if small_text else "")
        entries.append(Entry(name=name, family=FAMILIES[presets.preset_kind(name)],
                             what="random-weight preset", meaning=meaning))
    return entries


def _trained_kind(name: str) -> str:
    """The family of a trained preset, from its folder's model_index.json."""
    import json
    from pathlib import Path

    from . import presets
    from .families import family_made_of

    index = json.loads((Path(presets.trained_path(name)) / "model_index.json").read_text())
    return family_made_of(index).name


def render(entries: list[Entry]) -> str:
    """The catalogue as `tuner models` prints it: one block per name."""
    lines = []
    for e in entries:
        lines += [f"{e.name}  ({e.family.title}, {e.what})",
                  f"    combos: {e.combos}", f"    {e.meaning}"]
    lines += ["", "Also: a local folder or another hub id (its family read from its "
              "model_index.json), or a single-file checkpoint (.safetensors, .ckpt) of "
              + ", ".join(f.title for f in FAMILIES.values() if f.single_file)
              + " (its family read from its keys)."]
    return "\n".join(lines)


__all__ = ["Entry", "catalogue", "render"]
