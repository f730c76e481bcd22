"""How the code is held together: one module knows the names of what is stored on trials and
studies, and reading results never needs torch."""

from __future__ import annotations

import ast
import re
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


def test_no_two_classes_of_the_package_share_a_name():
    """A name says which class it is wherever it is imported (the evaluator's measured baseline
    and the record's stored one were both `Baseline`)."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


# ---------------------------------------------------------------------------------------------
# Accelerators describe themselves: the base knows no library, the registry takes a new one


ACCELERATORS = PACKAGE / "accelerators"


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"torch"}


def test_the_accelerator_base_names_no_library():
    """The base records and restores what each accelerator declares: it names none of the
    libraries, none of the accelerators, none of the attributes they set."""
    from tuner.accelerators import ACCELERATORS as registered

    libraries = set().union(*(_imported_packages(path) for path in ACCELERATORS.glob("*.py")))
    assert {"DeepCache", "tgate", "tomesd"} <= libraries  # what the accelerators import
    names = libraries | set(registered) | {"_tome_info", "ToMeBlock", "unet_levels"}
    names |= {cls.__name__ for cls in registered.values()}
    for cls in registered.values():
        names |= {n for n in cls.footprint.pipe + cls.footprint.classes}
    source = (ACCELERATORS / "base.py").read_text()
    named = sorted(n for n in names if re.search(rf"\b{re.escape(n)}\b", source, re.IGNORECASE))
    assert named == []


@pytest.fixture
def toy_accelerator():
    """A toy accelerator, registered for one test: it scales the UNet's mid block by `percent` %
    through an instance `forward`, a list on the pipeline, a forward hook and a class swap, and
    takes none of them back itself."""
    import contextlib

    import torch

    from tuner import accelerators
    from tuner.accelerators import Accelerator, Footprint, IntKnob

    class Marked(torch.nn.Module):
        pass

    class Tint(Accelerator):
        name = "tint"
        space = {"percent": IntKnob(90, 110)}
        footprint = Footprint(pipe=("tint_calls",), modules={"unet": ("forward",)},
                              classes=("Marked",))

        @contextlib.contextmanager
        def attach(self, pipe, params, generate, *, absorbed):
            block = pipe.unet.mid_block
            inner = block.forward
            pipe.tint_calls = []
            block.forward = lambda *a, **k: inner(*a, **k) * (params["percent"] / 100)
            block.register_forward_hook(lambda *a: pipe.tint_calls.append(1))
            block.resnets[0].__class__ = type("Marked", (Marked, type(block.resnets[0])), {})
            yield generate  # leaves everything behind, as tgate does

    accelerators.register(Tint)
    try:
        yield Tint
    finally:
        accelerators.ACCELERATORS.pop("tint")


def test_a_new_accelerator_needs_no_edit_to_the_base(tiny_sd, toy_accelerator):
    """Registered from outside the package, the toy is checked, applied, composed with DeepCache
    and undone exactly by its footprint alone."""
    import torch

    from tuner.accelerators import AcceleratorError, apply, check, leftovers, register

    def images(run):
        with torch.inference_mode():
            return run(prompt=["a red circle"], num_inference_steps=3, output_type="pt",
                       generator=torch.Generator("cpu").manual_seed(5)).images

    plain = images(tiny_sd)
    check(tiny_sd, {"tint": {"percent": 90}}, steps=3)
    with pytest.raises(AcceleratorError, match="outside"):
        check(tiny_sd, {"tint": {"percent": 80}}, steps=3)
    with apply(tiny_sd, {"tint": {"percent": 90}}, steps=3) as run:
        tinted = images(run)
        found = leftovers(tiny_sd)
        assert tiny_sd.tint_calls  # it ran
    assert {"pipe.tint_calls", "mid_block.forward", "mid_block: forward hooks",
            "mid_block.resnets.0: Marked class"} <= set(found)
    assert not torch.equal(tinted, plain)
    assert leftovers(tiny_sd) == []
    assert torch.equal(images(tiny_sd), plain)
    with apply(tiny_sd, {"tint": {"percent": 90}, "deepcache": {"cache_interval": 2,
                                                                "cache_branch_id": 0}},
               steps=3) as run:  # composes with the others
        assert not torch.equal(images(run), plain)
    assert leftovers(tiny_sd) == []
    assert torch.equal(images(tiny_sd), plain)
    with pytest.raises(ValueError, match="already registered"):
        register(toy_accelerator)

    class Undeclared(toy_accelerator):
        name = "undeclared"
        footprint = None

    with pytest.raises(TypeError, match="declares no footprint"):
        register(Undeclared)


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
