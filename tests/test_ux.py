"""What a run, `tuner show` and `tuner.accelerate` tell their user when something is odd: bad
values in a results file, a wrong argument to the API, files that are not tuner's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tuner
from sample_results import write_results
from tuner.cli import main


def assert_one_line_error(err: str) -> None:
    assert err.startswith("tuner: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


# -- the results file --------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    (("speed", "speedup", "value"), "2.25"),
    (("speed", "baseline_latency"), None),
    (("quality", "loss", "high"), [0.1]),
    (("quality", "images"), "32"),
])
def test_show_refuses_a_results_file_with_a_number_of_the_wrong_type(field, value, tmp_path,
                                                                     capsys):
    """A number stored as a string (a hand edit) reached `show`'s formatting and crashed it
    with a traceback (ValueError: Unknown format code 'f'); failed at 9214cba."""
    path = write_results(tmp_path / "search_params.json")
    data = json.loads(path.read_text())
    for slot in data["settings"].values():
        for entry in slot["answers"].values():
            if entry["chosen"]:
                target = entry["chosen"]
                for key in field[:-1]:
                    target = target[key]
                target[field[-1]] = value
    path.write_text(json.dumps(data))
    before = path.read_bytes()
    assert main(["show", "--output", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_one_line_error(err)
    assert "is not a tuner results file" in err and field[-1] in err
    assert out == ""
    assert path.read_bytes() == before


# -- tuner.accelerate --------------------------------------------------------------------------

@pytest.fixture
def results(tmp_path) -> Path:
    """A results file whose one setting (SD1.5, 50 steps) answers two goals."""
    return write_results(tmp_path / "search_params.json")


@pytest.mark.parametrize("pipe", [object(), "SD1.5", None], ids=["object", "str", "none"])
def test_accelerate_refuses_what_is_not_a_pipeline(pipe, results):
    """`accelerate(object(), results)` raised a raw AttributeError, not the documented
    AccelerateError; failed at 9214cba."""
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(pipe, results, setting="SD1.5", mode="max_speedup")
    assert "diffusers pipeline" in one_line(err) and type(pipe).__name__ in one_line(err)


def test_accelerate_refuses_other_steps_with_strict_at_once(tiny_sd, results):
    """`strict=True` with steps other than the tuned ones was accepted, and then every call
    raised; it is refused by `accelerate` itself, and the pipeline stays plain. Failed at
    9214cba."""
    from tuner.accelerators import leftovers

    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, results, setting="SD1.5", mode="max_speedup", steps=20,
                         strict=True)
    assert "tuned for 50 steps" in one_line(err) and "20 steps" in one_line(err)
    assert leftovers(tiny_sd) == []
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, params={"deepcache": {"cache_interval": 2,
                                                        "cache_branch_id": 0}}, steps=0)
    assert "steps must be a positive integer" in one_line(err)


@pytest.mark.parametrize("params, named", [
    ({"tome": {"ratio": 0.5}}, "missing max_downsample"),
    ({"tome": {"ratio": 0.5, "max_downsample": 1, "sx": 2}}, "unknown sx"),
])
def test_explicit_params_name_the_missing_or_unknown_knob(tiny_sd, params, named):
    """`params={"tome": {"ratio": 0.5}}` said "tome takes ['max_downsample', 'ratio']; got
    ['ratio']" without naming the knob at fault; failed at 9214cba."""
    with pytest.raises(tuner.AccelerateError) as err:
        tuner.accelerate(tiny_sd, params=params, steps=3)
    assert named in one_line(err)


def test_the_public_names_are_discoverable():
    """`dir(tuner)` listed none of the lazily imported public names; failed at 9214cba."""
    names = dir(tuner)
    for name in tuner.__all__:
        assert name in names
        assert getattr(tuner, name) is not None
    assert {"accelerate", "AccelerateError", "Accelerated", "TunedElsewhere"} <= set(names)
