"""The pipeline families the tuner supports, and which one a pipeline belongs to.

    family = family_of(pipe)          # SD, SDXL, FLUX, SD3 or PIXART_SIGMA; None for a pipeline of no known family
    kwargs = family.encode(pipe, ["a cat"], guidance=True)

A new family is one module beside these (base.Family) and one entry in FAMILIES.
"""

from __future__ import annotations

from collections.abc import Collection

from .base import Family
from .flux import FLUX
from .pixart import PIXART_SIGMA
from .sd import SD
from .sd3 import SD3
from .sdxl import SDXL

# In the order they are asked: the first that claims a pipeline or a checkpoint has it (SD,
# which loads every single-file model type but the others', comes last).
FAMILIES: dict[str, Family] = {f.name: f for f in (SDXL, FLUX, SD3, PIXART_SIGMA, SD)}


def supported() -> str:
    """The families in words, for messages: "FLUX.1, PixArt-Σ, SD1.x/2.x, ..."."""
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


__all__ = ["FAMILIES", "FLUX", "PIXART_SIGMA", "SD", "SD3", "SDXL", "Family", "family_made_of", "family_of", "family_of_checkpoint",
           "supported"]
