"""`tuner.accelerate(pipe, results)`: the chosen settings on a user's own pipeline, undone
exactly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import tuner
from tuner import accelerators
from tuner.accelerators import leftovers
from tuner.cli import main

TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "3", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1", "--threads",
        "1", "--height", "64", "--width", "64", "--no-progress", "--metric", "ssim",
        "--req-score-loss", "0.5", "--no-artifacts"]
TGATE = {"tgate": {"gate_step": 5, "sp_interval": 2, "fi_interval": 1, "warmup": 1}}
DEEPCACHE = {"deepcache": {"cache_interval": 2, "cache_branch_id": 0}}
SOLVER = {"solver": {"scheduler": "DPM-Solver++", "steps": 2}}  # tunes the step count


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("api")
    out = folder / "search_params.json"
    assert main(["run", *TINY, "--combo", "deepcache", "--trials", "2", "--studies",
                 str(folder / "studies"), "--output", str(out)]) == 0
    return out


def generate(run, steps: int | None = 3, **extra) -> torch.Tensor:
    kwargs = {"num_inference_steps": steps} if steps is not None else {}
    kwargs = {"height": 64, "width": 64, **kwargs, **extra}
    return run("a red bus", output_type="pt", guidance_scale=7.5,
               generator=torch.Generator().manual_seed(0), **kwargs).images


def chosen(results: Path) -> dict:
    (slot,) = json.loads(results.read_text())["settings"].values()
    (answer,) = slot["answers"].values()
    return answer


def test_accelerate_changes_output_and_remove_restores_it_exactly(tiny_sd, results):
    plain = generate(tiny_sd)
    fast = tuner.accelerate(tiny_sd, results)
    assert fast.params == chosen(results)["chosen"]["params"]
    assert fast.steps == 3 and fast.combo == "deepcache"
    assert fast.choice.speedup == chosen(results)["chosen"]["speedup"]
    try:
        accelerated = generate(fast)
        assert not torch.equal(accelerated, plain)
        assert torch.equal(generate(fast, steps=None), accelerated)  # steps default: tuned 3
    finally:
        fast.remove()
    assert leftovers(tiny_sd) == []
    assert torch.equal(generate(tiny_sd), plain)
    fast.remove()  # idempotent
    assert leftovers(tiny_sd) == []
    with pytest.raises(tuner.AccelerateError, match="removed"):
        fast("a red bus")


def test_context_manager_form(tiny_sd, results):
    plain = generate(tiny_sd)
    with tuner.accelerate(tiny_sd, str(results), combo="deepcache") as fast:
        assert fast.active and leftovers(tiny_sd) != []
        assert not torch.equal(generate(fast), plain)
    assert not fast.active and leftovers(tiny_sd) == []
    assert torch.equal(generate(tiny_sd), plain)


def test_explicit_tgate_params_generate_through_tgate(tiny_sd):
    plain = generate(tiny_sd, steps=8)
    with accelerators.apply(tiny_sd, TGATE, steps=8) as run:
        expected = generate(run, steps=8)
    assert leftovers(tiny_sd) == []
    with tuner.accelerate(tiny_sd, params=TGATE, steps=8) as fast:
        assert fast.combo == "tgate" and fast.choice is None and fast.setting is None
        assert "tgate" in tiny_sd.__dict__  # T-GATE's own generation method is in place
        through_handle = generate(fast, steps=8)
    assert leftovers(tiny_sd) == []
    assert not torch.equal(through_handle, plain)  # the handle ran T-GATE ...
    assert torch.equal(through_handle, expected)  # ... exactly as tuner's apply does
    assert torch.equal(generate(tiny_sd, steps=8), plain)


def test_explicit_params_ignore_the_results_file(tiny_sd, tmp_path):
    with tuner.accelerate(tiny_sd, tmp_path / "missing.json", params=DEEPCACHE) as fast:
        assert fast.steps == 50  # the pipeline's own default
    assert leftovers(tiny_sd) == []


def one_line(err: pytest.ExceptionInfo) -> str:
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert message and "\n" not in message
    return message


def test_missing_or_unreadable_file(tiny_sd, tmp_path):
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, tmp_path / "missing.json")
    assert "no results file" in one_line(err)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, bad)
    assert "cannot read results file" in one_line(err)
    assert leftovers(tiny_sd) == []


@pytest.fixture
def two_settings(results, tmp_path) -> tuple[Path, list[str]]:
    """The run's setting, and a copy of it as if tuned for 8 steps too."""
    data = json.loads(results.read_text())
    (key,) = data["settings"]
    other = key.replace("3 steps", "8 steps")
    data["settings"][other] = json.loads(json.dumps(data["settings"][key]))
    data["settings"][other]["setting"]["steps"] = 8
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    return path, [key, other]


def test_several_settings_need_a_choice(tiny_sd, two_settings):
    path, keys = two_settings
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, path)
    message = one_line(err)
    assert "2 settings" in message and all(k in message for k in keys)
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, path, setting="tiny-sd")  # matches both
    assert "matches 2 settings" in one_line(err)
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, path, setting="SDXL")
    assert "no setting" in one_line(err)
    with tuner.accelerate(tiny_sd, path, setting="8 steps") as fast:  # a unique part of a key
        assert fast.setting.steps == 8 and fast.steps == 8
    with tuner.accelerate(tiny_sd, path, setting=keys[0]) as fast:
        assert fast.steps == 3
    assert leftovers(tiny_sd) == []


def test_unknown_combo_mode_and_no_feasible_result(tiny_sd, results, tmp_path):
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, results, combo="deepcache+tome")
    assert "unknown combo 'deepcache+tome'" in one_line(err) and "deepcache" in str(err.value)
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, results, mode="req_speedup")
    assert "no req_speedup results" in one_line(err)
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, results, goal="latency")
    assert "no goal matching 'latency'" in one_line(err)
    data = json.loads(results.read_text())
    (slot,) = data["settings"].values()
    (answer,) = slot["answers"].values()
    answer["chosen"] = None
    answer["per_combo"]["deepcache"]["chosen"] = None
    infeasible = tmp_path / "none.json"
    infeasible.write_text(json.dumps(data))
    for combo in (None, "deepcache"):
        with pytest.raises(tuner.AccelerateError) as err:
            tuner.accelerate(tiny_sd, infeasible, combo=combo)
        assert "no feasible configuration" in one_line(err)
    assert leftovers(tiny_sd) == []


def test_bad_params_and_double_patching_are_one_line_errors(tiny_sd):
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, params={"deepcache": {"cache_interval": 99,
                                                        "cache_branch_id": 0}})
    assert "outside" in one_line(err)
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, params={"nope": {}})
    assert "unknown accelerator" in one_line(err)
    with tuner.accelerate(tiny_sd, params=DEEPCACHE):
        with pytest.raises(tuner.AccelerateError) as err:
            tuner.accelerate(tiny_sd, params=DEEPCACHE)
        assert "already patched" in one_line(err)
    assert leftovers(tiny_sd) == []


def test_show_still_prints_the_chosen_settings(results, capsys):
    assert main(["show", "--output", str(results)]) == 0
    out = capsys.readouterr().out
    assert "Fastest within ssim loss <= 0.5: deepcache" in out


def test_several_goals_need_a_choice(tiny_sd, tmp_path):
    from sample_results import write_results

    path = write_results(tmp_path / "r.json")
    with tuner.accelerate(tiny_sd, path, setting="SD1.5") as fast:  # the fastest-within-budget
        assert fast.combo == "deepcache"
    with tuner.accelerate(tiny_sd, path, setting="SD1.5", mode="req_speedup") as fast:
        assert fast.combo == "deepcache+tome"
    with tuner.accelerate(tiny_sd, path, setting="SD1.5", goal="speedup >= 1.5x") as fast:
        assert fast.combo == "deepcache+tome"


def test_a_setting_tuned_elsewhere_is_warned_about_once_or_refused(tiny_sd, tiny_sdxl, results):
    from tuner.api import TunedElsewhere
    from tuner.pipelines import set_scheduler

    with pytest.warns(TunedElsewhere, match="another UNet architecture"):
        tuner.accelerate(tiny_sdxl, results).remove()
    with pytest.raises(tuner.AccelerateError, match="strict=True"):
        tuner.accelerate(tiny_sdxl, results, strict=True)
    original = tiny_sd.scheduler
    set_scheduler(tiny_sd, "DPM-Solver++")
    try:
        with pytest.warns(TunedElsewhere, match="tuned with DDIM are applied with "
                                                "DPMSolverMultistepScheduler"):
            tuner.accelerate(tiny_sd, results).remove()
    finally:
        tiny_sd.scheduler = original
    import warnings

    with tuner.accelerate(tiny_sd, results) as fast:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            generate(fast)  # as tuned: 3 steps at 64 px, nothing to say
        with pytest.warns(TunedElsewhere) as seen:
            generate(fast, steps=20)
            generate(fast, steps=20)  # once per kind of difference
            generate(fast, height=128, width=128)
        messages = [str(w.message) for w in seen]
        assert messages == ["settings tuned for 3 steps are used at 20 steps",
                            "settings tuned at 64x64 are used at 128x128"]
    with tuner.accelerate(tiny_sd, results, strict=True) as fast:
        with pytest.raises(tuner.AccelerateError, match="20 steps"):
            generate(fast, steps=20)
    assert leftovers(tiny_sd) == [] and leftovers(tiny_sdxl) == []


def test_import_tuner_stays_light():
    import subprocess
    import sys

    code = "import sys, tuner; assert 'torch' not in sys.modules; print(tuner.accelerate)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "function accelerate" in done.stdout


def test_steps_or_size_passed_positionally_are_refused(tiny_sd, tiny_sdxl, results):
    """Failed at 9214cba: `fast(prompt, 128, 128, 20)` ran at 20 steps and 128 px without a
    word (only keywords were checked), and `fast(prompt, 64)` lost the tuned steps' default."""
    with tuner.accelerate(tiny_sd, results) as fast:
        with pytest.raises(tuner.AccelerateError, match="pass height, width, "
                                                        "num_inference_steps by keyword"):
            fast("a red bus", 128, 128, 20)
        with pytest.raises(tuner.AccelerateError, match="^pass height by keyword"):
            fast("a red bus", 64)
    # What is not tuned may go positionally (SDXL's second prompt); the steps still default.
    with tuner.accelerate(tiny_sdxl, params=DEEPCACHE, steps=2) as fast:
        seen = {}
        run = fast._run

        def spy(*args, **kwargs):
            seen.update(kwargs, positional=args)
            return run(*args, height=64, width=64, output_type="pt", **kwargs)

        fast._run = spy
        fast("a red bus", "in the rain")
        assert seen["positional"] == ("a red bus", "in the rain")
        assert seen["num_inference_steps"] == 2
    assert leftovers(tiny_sd) == [] and leftovers(tiny_sdxl) == []


def answer_file(path: Path, pipe, config: dict, *, status=None) -> Path:
    """A results file for tiny-sd (3 DDIM steps, 64 px) whose one answer chose `config`, as
    `tuner run` writes it, with the run's `status`."""
    from sample_results import choice

    from tuner.answer import Answer, ComboAnswer
    from tuner.pipelines import model_record
    from tuner.search.results import merge
    from tuner.setting import Goal, Setting

    setting = Setting(pipe="tiny-sd", scheduler="DDIM", steps=3, height=64, width=64)
    combo = accelerators.combo_of(config)
    picked = choice(combo, config, 1.4, 0.01, 2)
    merge(path, Answer(setting, Goal(loss_budget=0.02), None,
                       (ComboAnswer(combo, picked.study, picked, 4, 0, False),), picked, None,
                       status=status), model=model_record(pipe))
    return path


def steps_run(fast, **kwargs) -> int:
    seen: list[int] = []
    generate(fast, steps=None, callback_on_step_end=lambda p, s, t, k: seen.append(s) or k,
             **kwargs)
    return len(seen)


def test_explicit_steps_beside_a_tuned_step_count_are_run_and_warned_about(tiny_sd, tmp_path):
    """`steps=` other than the step count the settings tune is run (with the tuned scheduler)
    and warned about once, or refused with strict=True; from a results file and from params.
    Failed before the fix: the tuned count ran instead, without a word, even with
    strict=True."""
    from tuner.api import TunedElsewhere

    results = answer_file(tmp_path / "r.json", tiny_sd, SOLVER)
    for source in ({"results": results}, {"params": SOLVER}):
        with pytest.warns(TunedElsewhere, match="^settings tuned for 2 steps are used at 4 "
                                                "steps$"):
            fast = tuner.accelerate(tiny_sd, **source, steps=4)
        with fast:
            assert fast.steps == 4
            with warnings.catch_warnings():
                warnings.simplefilter("error", TunedElsewhere)  # said once, at the start
                assert steps_run(fast) == 4
            assert type(tiny_sd.scheduler).__name__ == "DPMSolverMultistepScheduler"
        with pytest.raises(tuner.AccelerateError, match="at 4 steps.*strict=True"):
            tuner.accelerate(tiny_sd, **source, steps=4, strict=True)
        assert leftovers(tiny_sd) == []
        with warnings.catch_warnings():
            warnings.simplefilter("error", TunedElsewhere)
            for steps in (None, 2):  # the tuned count, by default or by name
                with tuner.accelerate(tiny_sd, **source, steps=steps, strict=True) as fast:
                    assert fast.steps == 2 and steps_run(fast) == 2
    assert leftovers(tiny_sd) == []


def test_an_answer_that_is_not_final_is_warned_about_or_refused(tiny_sd, tmp_path):
    """An answer written by a run that was interrupted, or that is still going, is applied
    with a warning (`NotFinal`, the words `tuner show` prints, its process rechecked as `tuner
    show` does), and refused with strict=True; a final answer, or one no run marked, says
    nothing. Failed before the fix: such an answer was applied exactly like a final one."""
    import socket
    import subprocess
    import sys

    from tuner.status import COMPLETE, IN_PROGRESS, INTERRUPTED, Status

    stopped = Status(INTERRUPTED, "search", "during deepcache's search, at evaluation 2 of 4",
                     signal="SIGINT")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    killed = Status(IN_PROGRESS, "race", "during deepcache's race",
                    worker={"host": socket.gethostname(), "pid": int(ended.stdout)})
    for status, said in ((stopped, "the run was interrupted (Ctrl-C) during deepcache's "
                                   "search, at evaluation 2 of 4"),
                         (killed, "its process has ended since")):
        results = answer_file(tmp_path / f"{status.state}.json", tiny_sd, DEEPCACHE,
                              status=status)
        with pytest.warns(tuner.NotFinal) as seen:
            tuner.accelerate(tiny_sd, results).remove()
        (message,) = [str(w.message) for w in seen if w.category is tuner.NotFinal]
        assert said in message and "not final" in message and "\n" not in message
        with pytest.raises(tuner.AccelerateError, match="not final.*strict=True"):
            tuner.accelerate(tiny_sd, results, strict=True)
        assert leftovers(tiny_sd) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for status in (Status(COMPLETE), None):
            results = answer_file(tmp_path / f"{status}.json", tiny_sd, DEEPCACHE,
                                  status=status)
            tuner.accelerate(tiny_sd, results, strict=True).remove()
    assert leftovers(tiny_sd) == []
