import json
from pathlib import Path

import pytest

from tuner.prompts import BUILTIN_PROMPTS, PromptsError, choose_prompts, load_prompts

SHARED_TSV = Path(__file__).resolve().parents[2] / "shared/data/coco2014_captions_5k.tsv"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_coco_json_keeps_lowest_annotation_id_per_image_in_image_order(tmp_path):
    data = {
        "info": {}, "images": [],
        "annotations": [
            {"image_id": 30, "id": 9, "caption": "thirty, second"},
            {"image_id": 10, "id": 7, "caption": "  A  dog\non a\tmat. "},
            {"image_id": 30, "id": 3, "caption": "Thirty first."},
            {"image_id": 10, "id": 8, "caption": "ten, second"},
            {"image_id": 20, "id": 12, "caption": "twenty, second"},
            {"image_id": 20, "id": 11, "caption": "Twenty first."},
        ],
    }
    # A .txt name: the format is recognised by content.
    path = write(tmp_path, "captions_val2014.txt", json.dumps(data))
    assert load_prompts(path) == ["A dog on a mat.", "Twenty first.", "Thirty first."]
    assert load_prompts(str(path)) == load_prompts(path)


def test_mlperf_tsv(tmp_path):
    header = "id\timage_id\tcaption\theight\twidth\tfile_name\tcoco_url"
    rows = [
        "70\t227049\tA city at night  with people.\t640\t480\tCOCO_1.jpg\thttp://x/1.jpg",
        '5\t11\t"A sign that reads ""stop""."\t480\t640\tCOCO_2.jpg\thttp://x/2.jpg',
        "",
        "6\t12\t  A cat on a sofa.  \t480\t640\tCOCO_3.jpg\thttp://x/3.jpg",
    ]
    path = write(tmp_path, "captions.txt", "\n".join([header, *rows]) + "\n")
    assert load_prompts(path) == [
        "A city at night with people.", 'A sign that reads "stop".', "A cat on a sofa."]


def test_text_file(tmp_path):
    path = write(tmp_path, "prompts.txt", "\n  a red  car \n\n\nA blue boat\r\n   \nlast one")
    assert load_prompts(path) == ["a red car", "A blue boat", "last one"]


@pytest.mark.parametrize("name,text,what", [
    ("empty.txt", "", "is empty"),
    ("blank.txt", " \n\n \t\n", "is empty"),
    ("bad.json", '{"annotations": [', "is not valid JSON"),
    ("bad2.txt", '{"annotations": [}', "is not valid JSON"),
    ("other.json", '{"images": []}', 'no "annotations" list'),
    ("list.json", "[1, 2]", "item 0 is not a string"),
    ("noannot.json", '{"annotations": [{"id": 1}]}', "annotation 0 lacks"),
    ("nocap.tsv", "id\timage_id\ttext\n1\t2\thello\n", "no 'caption' column"),
    ("nocap2.txt", "id\timage_id\ttext\n1\t2\thello\n", "no 'caption' column"),
    ("headeronly.tsv", "id\tcaption\n", "contains no prompts"),
    ("emptycoco.json", '{"annotations": []}', "contains no prompts"),
])
def test_malformed_inputs_raise_one_line_errors(tmp_path, name, text, what):
    path = write(tmp_path, name, text)
    with pytest.raises(PromptsError) as info:
        load_prompts(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{path}'" in message
    assert what in message
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(PromptsError, match="does not exist") as info:
        load_prompts(path)
    assert str(path) in str(info.value)


def test_builtin_prompts():
    assert len(BUILTIN_PROMPTS) == 64
    assert len(set(BUILTIN_PROMPTS)) == 64
    assert all(p == p.strip() and "  " not in p and 10 < len(p) < 100 for p in BUILTIN_PROMPTS)


def test_choose_prompts():
    first = choose_prompts(BUILTIN_PROMPTS, 10, seed=0)
    assert first == choose_prompts(list(BUILTIN_PROMPTS), 10, seed=0)
    assert first != choose_prompts(BUILTIN_PROMPTS, 10, seed=1)
    assert len(set(first)) == 10 and set(first) <= set(BUILTIN_PROMPTS)
    assert sorted(choose_prompts(BUILTIN_PROMPTS, 64, seed=3)) == sorted(BUILTIN_PROMPTS)
    with pytest.raises(PromptsError, match="65.*64"):
        choose_prompts(BUILTIN_PROMPTS, 65, seed=0)
    for bad in (0, -1):
        with pytest.raises(PromptsError):
            choose_prompts(BUILTIN_PROMPTS, bad, seed=0)


def test_shared_coco_5k_tsv():
    if not SHARED_TSV.exists():
        pytest.skip(f"{SHARED_TSV} not present")
    prompts = load_prompts(SHARED_TSV)
    assert len(prompts) == 5000
    assert prompts[0] == "A city at night with people walking around."
    assert not any('""' in p for p in prompts)
