"""Shapes: a captioned image dataset made by code, for the trained ``tiny-shapes`` preset.

Each image is one coloured shape on a light, plain or softly textured background, captioned with
what it shows and where: "a small red circle in the top left". Captions are built from four
attributes (shape x colour x position x size: 5 x 6 x 9 x 2 = 540 scenes), so prompts carry
composition as COCO captions do, on a scale a toy model can learn. What the caption does not say
(exact place and size within their class, tilt, hue, background) varies at random.

Images are rendered in torch from signed distances with 1-pixel antialiasing, so a batch is
drawn on any device at once; the random draws are made on the CPU from a seeded generator, which
makes a batch for a given seed the same on every device (up to float rounding).

``python -m tuner.shapes N [SEED]`` prints N distinct prompts, one a line (a ``--prompts`` file).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import torch

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {  # RGB in [0, 1]
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.62, 0.20),
    "blue": (0.12, 0.28, 0.88),
    "yellow": (0.95, 0.82, 0.08),
    "purple": (0.55, 0.18, 0.72),
    "orange": (0.98, 0.52, 0.05),
}
# 3x3 grid: the words of the caption and the (row, column) of the cell
POSITIONS = {
    "in the top left": (0, 0), "at the top": (0, 1), "in the top right": (0, 2),
    "on the left": (1, 0), "in the center": (1, 1), "on the right": (1, 2),
    "in the bottom left": (2, 0), "at the bottom": (2, 1), "in the bottom right": (2, 2),
}
SIZES = {"small": 0.11, "large": 0.21}  # shape radius as a share of the image side

IMAGE_SIZE = 64
_CELL_CENTRES = (0.25, 0.5, 0.75)  # cells overlap for large shapes; their centres do not
_JITTER = 0.035  # centre jitter, as a share of the side (cells are 0.25 apart)
_SIZE_JITTER = 0.12  # relative radius jitter
_TILT = math.radians(8)  # square and diamond stay apart at this tilt
_ATTRIBUTES = ("shape", "colour", "position", "size")


@dataclass(frozen=True)
class Scene:
    """What a caption says: indices into SHAPES, COLOURS, POSITIONS and SIZES."""

    shape: int
    colour: int
    position: int
    size: int

    def caption(self, parts: Sequence[str] = _ATTRIBUTES) -> str:
        """The caption, e.g. "a small red circle in the top left"; `parts` may leave out size
        and position."""
        words = []
        if "size" in parts:
            words.append(list(SIZES)[self.size])
        words += [list(COLOURS)[self.colour], SHAPES[self.shape]]
        if "position" in parts:
            words.append(list(POSITIONS)[self.position])
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words])


def scenes() -> list[Scene]:
    """All 540 scenes, in a fixed order."""
    return [Scene(s, c, p, z) for s in range(len(SHAPES)) for c in range(len(COLOURS))
            for p in range(len(POSITIONS)) for z in range(len(SIZES))]


def class_prompts() -> list[str]:
    """One prompt per shape x colour class ("a red circle"), for retrieval: index
    ``shape * len(COLOURS) + colour``."""
    return [Scene(s, c, 0, 0).caption(("shape", "colour"))
            for s in range(len(SHAPES)) for c in range(len(COLOURS))]


def prompts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct full captions in a seeded order (at most 540)."""
    all_scenes = scenes()
    if not 0 < n <= len(all_scenes):
        raise ValueError(f"n must be in 1..{len(all_scenes)}, got {n}")
    return [s.caption() for s in random.Random(seed).sample(all_scenes, n)]


def words() -> list[str]:
    """Every word a caption can use (the tokenizer's vocabulary)."""
    found = {"a", "an"} | set(SHAPES) | set(COLOURS) | set(SIZES)
    for phrase in POSITIONS:
        found.update(phrase.split())
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# Rendering


def _distance(shape: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed distance (in radii, negative inside) of points (x, y) to each shape of unit
    radius centred at 0, y pointing up. Polygons use the max of their edges' half-planes, which
    is exact near edges, where antialiasing needs it."""
    ax, ay = x.abs(), y.abs()
    circle = torch.sqrt(x * x + y * y) - 1
    square = torch.maximum(ax, ay) - 0.82
    c30 = math.cos(math.pi / 6)
    triangle = torch.maximum(torch.maximum(-y, c30 * x + 0.5 * y),
                             -c30 * x + 0.5 * y) - 0.65  # circumradius 1.3, apex up
    diamond = (ax + ay) - 1.05
    arm = 0.32
    cross = torch.minimum(torch.maximum(ax - 0.95, ay - arm), torch.maximum(ax - arm, ay - 0.95))
    shapes = torch.stack([circle, square, triangle, diamond, cross])  # in SHAPES order
    return shapes.gather(0, shape.view(1, -1, 1, 1).expand(1, *x.shape)).squeeze(0)


@dataclass
class Batch:
    images: torch.Tensor  # float (N, 3, H, W) in [0, 1]
    labels: torch.Tensor  # long (N, 4): shape, colour, position and size indices (CPU)

    @property
    def scenes(self) -> list[Scene]:
        return [Scene(*map(int, row)) for row in self.labels]

    @property
    def captions(self) -> list[str]:
        return [s.caption() for s in self.scenes]


def scene_index(labels: torch.Tensor) -> torch.Tensor:
    """The index in ``scenes()`` of each row of labels."""
    s, c, p, z = labels.unbind(-1)
    return ((s * len(COLOURS) + c) * len(POSITIONS) + p) * len(SIZES) + z


def sample(n: int, *, generator: torch.Generator | None = None, seed: int | None = None,
           scene_list: Sequence[Scene] | None = None, size: int = IMAGE_SIZE,
           device: str | torch.device = "cpu") -> Batch:
    """`n` random images with their labels (scenes uniform over the 540, unless `scene_list`
    fixes them). Pass a CPU `generator` to continue a stream, or a `seed`."""
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    g = generator

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=g)

    if scene_list is None:
        counts = (len(SHAPES), len(COLOURS), len(POSITIONS), len(SIZES))
        labels = torch.stack([torch.randint(k, (n,), generator=g) for k in counts], 1)
    elif len(scene_list) != n:
        raise ValueError(f"{len(scene_list)} scenes for n={n}")
    else:
        labels = torch.tensor([[s.shape, s.colour, s.position, s.size] for s in scene_list],
                              dtype=torch.long).view(n, 4)
    shape, colour, position, size_class = labels.unbind(1)

    cells = torch.tensor(list(POSITIONS.values()))[position]
    centres = torch.tensor(_CELL_CENTRES)
    cy = centres[cells[:, 0]] + uniform(n, low=-_JITTER, high=_JITTER)
    cx = centres[cells[:, 1]] + uniform(n, low=-_JITTER, high=_JITTER)
    radius = torch.tensor(list(SIZES.values()))[size_class] * uniform(
        n, low=1 - _SIZE_JITTER, high=1 + _SIZE_JITTER)
    tilt = uniform(n, low=-_TILT, high=_TILT)
    rgb = (torch.tensor(list(COLOURS.values()))[colour]
           + uniform(n, 3, low=-0.06, high=0.06)).clamp(0, 1)

    # Background: a light tinted grey; half of them with a soft gradient and blotches.
    grey = uniform(n, 1, low=0.68, high=0.95)
    background = (grey + uniform(n, 3, low=-0.05, high=0.05)).clamp(0, 1)
    textured = (torch.rand(n, generator=g) < 0.5).float()
    angle = uniform(n, high=2 * math.pi)
    gradient = uniform(n, low=0.0, high=0.12) * textured
    blotches = torch.randn(n, 1, 4, 4, generator=g) * 0.04 * textured.view(n, 1, 1, 1)

    d = torch.device(device)
    coords = (torch.arange(size, device=d, dtype=torch.float32) + 0.5) / size
    py, px = coords.view(1, size, 1), coords.view(1, 1, size)
    cx, cy, radius, tilt, angle = (t.to(d).view(n, 1, 1) for t in (cx, cy, radius, tilt, angle))
    dx, dy = px - cx, -(py - cy)  # y up
    cos, sin = torch.cos(tilt), torch.sin(tilt)
    x, y = (cos * dx + sin * dy) / radius, (-sin * dx + cos * dy) / radius
    pixels = _distance(shape.to(d), x, y) * radius * size
    alpha = (0.5 - pixels).clamp(0, 1).unsqueeze(1)

    ramp = torch.cos(angle) * (px - 0.5) + torch.sin(angle) * (py - 0.5)
    texture = gradient.to(d).view(n, 1, 1) * ramp + torch.nn.functional.interpolate(
        blotches.to(d), size=(size, size), mode="bicubic", align_corners=False).squeeze(1)
    back = (background.to(d).view(n, 3, 1, 1) + texture.unsqueeze(1)).clamp(0, 1)
    images = alpha * rgb.to(d).view(n, 3, 1, 1) + (1 - alpha) * back
    return Batch(images.clamp(0, 1), labels)


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2 or not all(a.isdigit() for a in args):
        sys.exit("usage: python -m tuner.shapes N [SEED]   (prints N distinct prompts)")
    try:
        print("\n".join(prompts(int(args[0]), int(args[1]) if len(args) > 1 else 0)))
    except ValueError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
