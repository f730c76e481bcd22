"""How the code is held together: one module knows the names of what is stored on trials and
studies, and reading results never needs torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tuner"


def _uses_of_stored_attributes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "user_attrs":
            found.append(f"{path.name}:{node.lineno} user_attrs[...]")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func
            if target.attr == "set_user_attr" or (
                    target.attr == "get" and isinstance(target.value, ast.Attribute)
                    and target.value.attr == "user_attrs"):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(target)}(...)")
    return found


def test_only_the_record_module_reads_or_writes_stored_attributes_by_name():
    uses = [use for path in sorted(PACKAGE.rglob("*.py")) if path.name != "record.py"
            for use in _uses_of_stored_attributes(path)]
    assert uses == []


@pytest.mark.parametrize("module", ["tuner.cli", "tuner.report", "tuner.answer",
                                    "tuner.search.results", "tuner.api"])
def test_reading_results_does_not_need_torch(module):
    code = f"import sys; sys.modules['torch'] = None; import {module}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_show_and_report_run_without_torch(tmp_path):
    from sample_results import write_results

    path = write_results(tmp_path / "r.json")
    code = ("import sys; sys.modules['torch'] = None; from tuner.cli import main; "
            f"sys.exit(main(['show', '--output', {str(path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Fastest within clip loss <= 0.02" in done.stdout


def test_only_the_interrupts_module_handles_the_stop_signals_of_a_run():
    """A raising signal handler throws wherever the interpreter is, a library's finalizer
    included (tuner/interrupts.py); a run's handlers are set there alone. The dashboard, which
    runs no trial and only waits on its server thread, keeps its own."""
    setters = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "signal" and ast.unparse(node.func.value) == "signal":
                setters.append(path.name)
    assert sorted(set(setters)) == ["dashboard.py", "interrupts.py"]


# What only a pipeline family knows (tuner/families): its denoiser, its text encoders and how
# its prompts are encoded, its pipeline classes. The accelerators patch a UNet by nature, and
# the presets build UNet architectures; nothing else asks a pipeline for them.
FAMILY_NAMES = {"unet", "transformer", "encode_prompt", "text_encoder_2", "tokenizer_2",
                "prompt_embeds", "pooled_prompt_embeds", "StableDiffusionPipeline",
                "StableDiffusionXLPipeline", "UNet2DConditionModel"}
FAMILY_ANSWERED = ("families", "accelerators", "presets.py")


def _family_names_used(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = node.attr if isinstance(node, ast.Attribute) else \
            node.id if isinstance(node, ast.Name) else \
            node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else \
            None
        names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else [name]
        found += [f"{path.relative_to(PACKAGE)}:{node.lineno} {n}" for n in names
                  if n in FAMILY_NAMES]
    return found


def test_only_the_pipeline_families_name_what_a_family_answers():
    uses = [use for path in sorted(PACKAGE.rglob("*.py"))
            if path.relative_to(PACKAGE).parts[0] not in FAMILY_ANSWERED
            for use in _family_names_used(path)]
    assert uses == []


def test_the_search_reaches_no_pipeline():
    """The search measures through its Measurer (tuner/search/measurer.py) alone."""
    uses = [f"{path.name}:{node.lineno}" for path in sorted((PACKAGE / "search").glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr == "pipe"]
    assert uses == []
