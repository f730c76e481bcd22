"""Where prompts come from: COCO caption files, the MLPerf captions TSV, plain text, or a
built-in list, and a seeded choice of a subset of them."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path
from typing import Sequence


class PromptsError(ValueError):
    """A prompts file that cannot be read, or an impossible choice of prompts (one-line message)."""


_WHITESPACE = re.compile(r"\s+")


def _normalise(caption: str) -> str:
    return _WHITESPACE.sub(" ", caption).strip()


def load_prompts(path: str | Path) -> list[str]:
    """Read prompts from a COCO captions JSON, an MLPerf captions TSV or a text file.

    The format is recognised by content: JSON (an object or a list, or a ``.json`` file) must
    be a list of prompt strings or a COCO captions file, whose first caption (lowest annotation
    id) of each image is kept, in image-id order; a first line with a tab (or a ``.tsv`` file)
    is a TSV header with a ``caption`` column, one caption per row; anything else has one
    prompt per non-blank line.
    """
    path = Path(path)
    name = f"prompts file '{path}'"
    if not path.exists():
        raise PromptsError(f"{name} does not exist")
    if not path.is_file():
        raise PromptsError(f"{name} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PromptsError(f"{name} is not UTF-8 text") from None
    except OSError as e:
        raise PromptsError(f"{name} cannot be read: {e.strerror or e}") from None
    if not text.strip():
        raise PromptsError(f"{name} is empty")

    first_line = text.lstrip().partition("\n")[0]
    if text.lstrip()[:1] in ("{", "[") or path.suffix.lower() == ".json":
        prompts = _json_prompts(text, name)
    elif "\t" in first_line or path.suffix.lower() == ".tsv":
        prompts = _tsv_captions(text, name)
    else:
        prompts = [p for p in map(_normalise, text.splitlines()) if p]
    if not prompts:
        raise PromptsError(f"{name} contains no prompts")
    return prompts


def _json_prompts(text: str, name: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptsError(f"{name} is not valid JSON: {e.msg} at line {e.lineno}, "
                           f"column {e.colno}") from None
    if isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, str):
                raise PromptsError(f"{name} is a JSON list, but item {i} is not a string "
                                   f"(a list of prompts, or a COCO captions object)")
        return [p for p in map(_normalise, data) if p]
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise PromptsError(f'{name} is neither a list of prompts nor a COCO captions file: '
                           f'no "annotations" list')
    first: dict = {}  # image_id -> (annotation id, caption)
    for i, ann in enumerate(annotations):
        try:
            image_id, ann_id, caption = ann["image_id"], ann["id"], _normalise(ann["caption"])
        except (TypeError, KeyError, AttributeError):
            raise PromptsError(f'{name} is not a COCO captions file: annotation {i} lacks '
                               f'"image_id", "id" or a "caption" string') from None
        if caption and (image_id not in first or ann_id < first[image_id][0]):
            first[image_id] = (ann_id, caption)
    return [first[k][1] for k in sorted(first)]


def _tsv_captions(text: str, name: str) -> list[str]:
    # The csv module (like pandas, which MLPerf uses) unquotes captions such as
    # "A sign that reads ""stop""." -> A sign that reads "stop".
    rows = csv.reader(io.StringIO(text.lstrip("\r\n")), delimiter="\t")
    header = [h.strip().lower() for h in next(rows)]
    if "caption" not in header:
        raise PromptsError(f"{name} is a TSV file with no 'caption' column "
                           f"(columns: {', '.join(header)})")
    column = header.index("caption")
    prompts = []
    for row in rows:
        if not any(field.strip() for field in row):
            continue
        if column >= len(row):
            raise PromptsError(f"{name} has a row with {len(row)} fields at line "
                               f"{rows.line_num}, but its caption is column {column + 1}")
        if caption := _normalise(row[column]):
            prompts.append(caption)
    return prompts


BUILTIN_PROMPTS: tuple[str, ...] = (
    "A woman riding a bicycle down a quiet tree-lined street.",
    "Two dogs chasing each other across a grassy park.",
    "A plate of spaghetti with tomato sauce and a sprig of basil.",
    "A red double-decker bus stopped at a busy corner.",
    "A cat curled up asleep on a wooden windowsill.",
    "A young boy kicking a soccer ball on a dirt field.",
    "A kitchen counter covered with fresh vegetables and a cutting board.",
    "A man surfing a large wave under a cloudy sky.",
    "A bowl of fruit sitting on a dining room table.",
    "A small sailboat floating on a calm blue lake.",
    "A group of friends sharing a pizza at a restaurant.",
    "A horse grazing in a fenced pasture near a barn.",
    "A living room with a gray couch and a flat screen television.",
    "A tennis player reaching for a ball on a clay court.",
    "A yellow taxi driving past tall office buildings.",
    "A little girl holding a bright pink umbrella in the rain.",
    "A sandwich cut in half next to a pile of potato chips.",
    "An elephant walking along a muddy riverbank.",
    "A bathroom with a white sink and a round mirror.",
    "A skateboarder jumping over a set of concrete steps.",
    "A train pulling into a station on a snowy morning.",
    "Two people flying a colorful kite on a windy beach.",
    "A bird perched on a branch covered in blossoms.",
    "A birthday cake with lit candles on a paper plate.",
    "A motorcycle parked beside a brick wall.",
    "A chef slicing onions in a crowded restaurant kitchen.",
    "A giraffe reaching up to eat leaves from a tall tree.",
    "A laptop and a cup of coffee on a cluttered desk.",
    "A baseball batter swinging at a pitch in a stadium.",
    "A flock of sheep walking along a country road.",
    "An old man reading a newspaper on a park bench.",
    "A bedroom with a neatly made bed and striped pillows.",
    "A skier racing down a steep snowy slope.",
    "A fire hydrant on a sidewalk next to a parked car.",
    "A bowl of soup with a spoon and a slice of bread.",
    "A zebra standing alone in a dry grassland.",
    "A family having a picnic on a blanket under a tree.",
    "A commercial airplane taking off from a runway.",
    "A dog catching a frisbee in mid-air.",
    "A street market stall piled high with oranges and apples.",
    "A woman talking on her phone while waiting at a crosswalk.",
    "A teddy bear sitting on a child's bed.",
    "Several boats tied up at a wooden dock at sunset.",
    "A close-up of a donut covered in chocolate sprinkles.",
    "A basketball player leaping toward the hoop.",
    "A cow lying down in a green field.",
    "A vase of sunflowers on a kitchen table.",
    "A man carrying a surfboard along the shore.",
    "A stop sign at the corner of an empty intersection.",
    "Two children building a sandcastle at the beach.",
    "A brown bear fishing in a rushing stream.",
    "A pickup truck loaded with firewood on a gravel road.",
    "A breakfast of eggs, toast and bacon on a white plate.",
    "A woman walking her dog through a snowy neighborhood.",
    "An office with rows of desks and computer monitors.",
    "A cyclist racing on a mountain trail.",
    "A clock tower standing above a crowded town square.",
    "A person cooking burgers on an outdoor grill.",
    "A polar bear swimming in icy water.",
    "A hot dog with mustard and relish in a paper tray.",
    "A boy brushing his teeth in front of a bathroom mirror.",
    "A volleyball game on a sandy court by the ocean.",
    "A black and white cat sitting next to a laptop keyboard.",
    "A city street at night lit by neon signs and headlights.",
)


def choose_prompts(prompts: Sequence[str], num_samples: int, seed: int, *,
                   source: str = "the prompts given") -> list[str]:
    """``num_samples`` prompts drawn without replacement, the same for the same ``seed``;
    `source` names where they come from in the error."""
    if num_samples <= 0:
        raise PromptsError(f"cannot choose {num_samples} prompts: the number must be positive")
    if num_samples > len(prompts):
        raise PromptsError(f"--num-samples {num_samples} needs as many prompts, and "
                           f"{source} has only {len(prompts)}: lower --num-samples or give "
                           f"more prompts (--prompts)")
    return random.Random(seed).sample(list(prompts), num_samples)


def repeated(prompts: Sequence[str]) -> list[str]:
    """The prompts that occur more than once, each once, in order of first occurrence."""
    seen: set[str] = set()
    again: dict[str, None] = {}
    for p in prompts:
        if p in seen:
            again[p] = None
        seen.add(p)
    return list(again)


def _shown(prompt: str, width: int = 50) -> str:
    return repr(prompt if len(prompt) <= width else prompt[:width - 3] + "...")


def notes(pool: Sequence[str], chosen: Sequence[str], truncated: Sequence[str], *,
          source: str, limit: int) -> list[str]:
    """What the user should know about the prompts: repeats in `pool` (each draw of one is
    scored again, with its own seed, and weighs twice in the loss), and prompts among `chosen`
    longer than the text encoder reads (`truncated`: CLIP scores only their first `limit`
    tokens)."""
    found = []
    again = repeated(pool)
    if again:
        found.append(f"{source} repeats {len(again)} prompt(s), e.g. {_shown(again[0])}: a "
                     f"repeated prompt can be drawn more than once and then counts more than "
                     f"once in the loss")
    if truncated:
        found.append(f"{len(truncated)} of the {len(chosen)} prompts are longer than "
                     f"CLIP's {limit} tokens, e.g. {_shown(truncated[0])}: CLIP scores "
                     f"only their first {limit}, so losses ignore the rest")
    return found
