"""The pipeline families the tuner supports, and which one a pipeline belongs to.

    family = family_of(pipe)          # SD or SDXL; None for a pipeline of no known family
    kwargs = family.encode(pipe, ["a cat"], guidance=True)

A new family is one module beside these (base.Family) and one entry in FAMILIES.
"""

from __future__ import annotations

from collections.abc import Collection

from .base import Family
from .sd import SD
from .sdxl import SDXL

# In the order they are asked: the first that claims a pipeline or a checkpoint has it (SD,
# which loads every single-file model type but SDXL's, comes last).
FAMILIES: dict[str, Family] = {f.name: f for f in (SDXL, SD)}


def supported() -> str:
    """The families in words, for messages: "SD1.x/2.x, SDXL"."""
    return ", ".join(f.title for f in sorted(FAMILIES.values(), key=lambda f: f.name))


def family_of(pipe) -> Family | None:
    """The family of a loaded pipeline; None when it is of none the tuner supports."""
    return next((f for f in FAMILIES.values() if f.matches(pipe)), None)


def family_made_of(components: Collection[str]) -> Family | None:
    """The family of a pipeline with these components (a folder's model_index.json keys)."""
    return next((f for f in FAMILIES.values() if f.made_of(components)), None)


def family_of_checkpoint(kind: str) -> Family:
    """The family of a single-file checkpoint of diffusers' model type `kind`."""
    return next(f for f in FAMILIES.values() if f.holds_checkpoint(kind))


__all__ = ["FAMILIES", "SD", "SDXL", "Family", "family_made_of", "family_of", "family_of_checkpoint",
           "supported"]
