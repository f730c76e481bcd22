"""What a patch really changed on a pipeline, to hold an accelerator's declared `Footprint` to it.

`snapshot` records every instance attribute (by identity) of the pipeline, of each of its
components and of every module of its module trees, with the modules' classes and forward hooks.
`undeclared` lists the differences between two snapshots that a footprint does not cover, less
those a plain generation makes by itself (the pipeline's `_guidance_scale`, the scheduler's
timesteps...), found by diffing two plain generations.
"""

from __future__ import annotations

import torch

from tuner.accelerators import Footprint


def snapshot(pipe) -> dict[tuple[str, str], object]:
    """(where, what) -> the object there; `where` is "pipe", a component, or component:module."""
    found: dict[tuple[str, str], object] = {}
    for attr, value in vars(pipe).items():
        found["pipe", attr] = value
        if isinstance(value, torch.nn.Module):
            for name, module in value.named_modules():
                where = f"{attr}:{name}"
                found[where, "__class__"] = type(module)
                found[where, "hooks"] = (tuple(module._forward_pre_hooks),
                                         tuple(module._forward_hooks))
                for key, item in vars(module).items():
                    if key not in ("_forward_pre_hooks", "_forward_hooks"):
                        found[where, key] = item
        elif hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
            for key, item in vars(value).items():
                found[attr, key] = item
    return found


def differences(before: dict, after: dict) -> set[tuple[str, str]]:
    return {key for key in before.keys() | after.keys()
            if key not in before or key not in after or not _same(before[key], after[key])}


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, (int, float, str, bool, type(None))) and type(a) is type(b):
        return a == b
    if isinstance(a, tuple) and isinstance(b, tuple):  # the hook keys
        return a == b
    return False


def covered(key: tuple[str, str], footprint: Footprint) -> bool:
    where, what = key
    if where == "pipe":
        return what in footprint.pipe
    component, colon, _ = where.partition(":")
    if component in footprint.pipe:  # an object the patch put on the pipeline: all of it
        return True
    if not colon:
        return what in footprint.components.get(component, ())
    return component in footprint.modules and (
        what in ("__class__", "hooks") or what in footprint.modules[component])


def undeclared(plain: tuple[dict, dict], patched: dict, footprint: Footprint) -> list[str]:
    """The changes from `plain[0]` to `patched` that `footprint` does not declare and that a plain
    generation (`plain[0]` to `plain[1]`) does not make too."""
    noise = differences(*plain)
    return sorted(f"{where}.{what}" for where, what in differences(plain[0], patched) - noise
                  if not covered((where, what), footprint))
