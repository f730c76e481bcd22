"""The command line: bad input is one line on stderr with exit code 2 and nothing written;
spellings; `tuner show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sample_results import SD15, SD21, write_results
from tuner.cli import build_parser, main

TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "3", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--no-progress", "--combo", "deepcache",
        "--trials", "1"]
TUNER = str(Path(sys.executable).with_name("tuner"))
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

COCO_NO_ANNOTATIONS = json.dumps({"images": [{"id": 1}]})
COCO_BAD_ANNOTATION = json.dumps({"annotations": [{"image_id": 1, "id": 1}]})

# (id, extra arguments, input files to write {name: text or None for a folder}, marks)
def _sqlite_without_studies() -> bytes:
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.db"
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE notes (text)")
        connection.commit()
        connection.close()
        return path.read_bytes()


BAD_INPUT = [
    ("unknown-combo", ["--combo", "nope"], {}),
    ("unknown-sampler", ["--sampler", "nope"], {}),
    ("height-not-divisible-by-8", ["--height", "100"], {}),
    ("width-not-divisible-by-8", ["--width", "130"], {}),
    ("timing-precision-0", ["--timing-precision", "0"], {}),
    ("workers-on-cpu", ["--workers", "2"], {}),
    ("results-setting-not-an-object", ["--output", "out.json"],
     {"out.json": '{"format": 2, "settings": {"k": []}}'}),
    ("results-answer-malformed", ["--output", "out.json"],
     {"out.json": '{"format": 2, "settings": {"k": {"setting": {}, "answers": {"g": []}}}}'}),
    ("results-older-format", ["--output", "out.json"],
     {"out.json": '{"format": 1, "settings": {}}'}),
    ("unknown-sched", ["--sched", "Heun"], {}),
    ("req-speedup-1", ["--req-speedup", "1"], {}),
    ("req-speedup-0.5", ["--req-speedup", "0.5"], {}),
    ("req-time-0", ["--req-time", "0"], {}),
    ("req-time-negative", ["--req-time", "-1"], {}),
    ("req-score-loss-0", ["--req-score-loss", "0"], {}),
    ("req-score-loss-1", ["--req-score-loss", "1"], {}),
    ("req-score-loss-1.5", ["--req-score-loss", "1.5"], {}),
    ("req-score-loss-word", ["--req-score-loss", "two"], {}),
    ("req-time-and-req-speedup", ["--req-time", "1", "--req-speedup", "2"], {}),
    ("steps-0", ["--steps", "0"], {}),
    ("batch-size-0", ["--batch-size", "0"], {}),
    ("num-samples-negative", ["--num-samples", "-1"], {}),
    ("steps-not-a-number", ["--steps", "abc"], {}),
    ("trials-0", ["--trials", "0"], {}),
    ("patience-negative", ["--patience", "-1"], {}),
    ("timeout-0", ["--timeout", "0"], {}),
    ("timeout-negative", ["--timeout", "-5"], {}),
    ("timeout-word", ["--timeout", "an hour"], {}),
    ("timeout-infinite", ["--timeout", "inf"], {}),
    ("prompts-missing", ["--prompts", "missing.txt"], {}),
    ("prompts-empty", ["--prompts", "empty.txt"], {"empty.txt": ""}),
    ("prompts-folder", ["--prompts", "folder"], {"folder": None}),
    ("coco-malformed-json", ["--prompts", "captions.json"],
     {"captions.json": '{"annotations": [{"image_id": 1,'}),
    ("coco-no-annotations", ["--prompts", "captions.json"],
     {"captions.json": COCO_NO_ANNOTATIONS}),
    ("coco-annotation-without-caption", ["--prompts", "captions.json"],
     {"captions.json": COCO_BAD_ANNOTATION}),
    ("model-path-missing", ["--pipe", "./no/such/model"], {}),
    ("model-path-missing-relative", ["--pipe", "no/such/model"], {}),
    ("model-folder-not-a-model", ["--pipe", "./folder"], {"folder": None}),
    ("studies-is-a-file", ["--studies", "afile"], {"afile": "x\n"}),
    ("studies-under-a-file", ["--studies", "afile/sub"], {"afile": "x\n"}),
    ("output-under-a-file", ["--output", "afile/out.json"], {"afile": "x\n"}),
    ("output-not-json", ["--output", "out.json"], {"out.json": "{not json"}),
    ("output-not-results", ["--output", "out.json"], {"out.json": "[1, 2]"}),
    ("num-samples-over-prompt-count", ["--prompts", "two.txt", "--num-samples", "3"],
     {"two.txt": "a red bus\na cat\n"}),
    ("num-samples-over-builtin-count", ["--num-samples", "100"], {}),
    ("num-samples-under-batch-size", ["--num-samples", "1", "--batch-size", "2"], {}),
    ("studies-db-corrupt", ["--studies", "st"], {"st": None, "st/tuner.db": "not a database"}),
    ("studies-db-not-optuna", ["--studies", "st"],
     {"st": None, "st/tuner.db": _sqlite_without_studies()}),
    ("storage-not-a-url", ["--storage", "not a url"], {}),
]


def _param(case):
    name, args, files, *marks = case
    return pytest.param(args, files, id=name, marks=marks)


def write_inputs(folder: Path, files: dict) -> None:
    for name, text in files.items():
        if text is None:
            (folder / name).mkdir()
        elif isinstance(text, bytes):
            (folder / name).write_bytes(text)
        else:
            (folder / name).write_text(text)


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in folder.rglob("*")}


def assert_one_line_error(err: str) -> None:
    assert err.startswith("tuner: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("args, files", [_param(c) for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, files, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)  # default --studies and --output land here
    write_inputs(tmp_path, files)
    before = tree(tmp_path)
    rc = main(["run", *TINY, *args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert_one_line_error(err)
    assert out == ""
    assert tree(tmp_path) == before  # no studies folder, database or output file


@pytest.mark.parametrize("args", [
    pytest.param(["--pipe", "./no/such/model"], id="model-path-missing"),
    pytest.param(["--num-samples", "100"], id="num-samples-over-builtin-count"),
])
def test_bad_input_end_to_end_through_the_console_script(args, tmp_path):
    proc = subprocess.run([TUNER, "run", *TINY, *args], cwd=tmp_path, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr)
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_no_command_lists_the_commands_exit_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    for command in ("run", "show", "report", "dashboard"):
        assert command in err


def test_version_and_help_with_defaults(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("tuner ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: SD1.5)", "(default: 50)", "(default: 0.02)", "(default: tpe)",
                  "(default: search_params.json)"):
        assert shown in text


# -- spellings ---------------------------------------------------------------------------------

def test_underscore_spellings_are_accepted():
    parser = build_parser()
    args = parser.parse_args(["run", "--batch_size", "3", "--num_samples", "5",
                              "--req_score_loss", "0.1", "--req_speedup", "2.5"])
    assert (args.batch_size, args.num_samples, args.loss_budget, args.req_speedup) == \
        (3, 5, 0.1, 2.5)
    args = parser.parse_args(["run", "--req_time", "0.75", "--stop_when_met", "--timing_pairs",
                              "5", "--clip_model", "tiny-clip", "--full_front"])
    assert args.req_time == 0.75 and args.req_speedup is None
    assert (args.stop_when_met, args.timing_pairs, args.clip_model, args.full_front) == \
        (True, 5, "tiny-clip", True)
    dashed = parser.parse_args(["run", "--batch-size", "3", "--num-samples", "5",
                                "--req-score-loss", "0.1", "--req-time", "0.75"])
    assert (dashed.batch_size, dashed.num_samples, dashed.loss_budget, dashed.req_time) == \
        (3, 5, 0.1, 0.75)


@pytest.mark.parametrize("args, flag", [
    (["--req_speedup", "1"], "--req-speedup"),
    (["--req_time", "0"], "--req-time"),
    (["--req_score_loss", "2"], "--req-score-loss"),
    (["--batch_size", "0"], "--batch"),
    (["--num_samples", "0"], "--num"),
])
def test_underscore_spellings_are_validated_like_dashed_ones(args, flag, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert flag in err
    assert list(tmp_path.iterdir()) == []


def test_mutually_exclusive_in_either_spelling(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *TINY, "--req_time", "1", "--req-speedup", "2"]) == 2
    assert_one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


# -- tuner show --------------------------------------------------------------------------------

def test_show_prints_every_answer_with_its_intervals(tmp_path, capsys):
    path = write_results(tmp_path / "search_params.json")
    before = path.read_bytes()
    assert main(["show", "--output", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert SD15.key in out and SD21.key in out
    assert "fastest | clip loss <= 0.02" in out and "speedup >= 1.5x | clip loss <= 0.02" in out
    assert "2.25x [2.23, 2.27]" in out and "1.10% [0.80%, 1.40%]" in out
    assert "deepcache(cache_interval=3, cache_branch_id=1)" in out
    assert "tome(ratio=0.4, max_downsample=1)" in out
    assert "Meets 1.50x within clip loss <= 0.02 with the lowest loss" in out
    assert "(0.500s -> 0.222s per batch), confirmed" in out
    assert "No configuration keeps clip loss <= 0.001." in out  # SD2.1 has no answer
    assert path.read_bytes() == before


def test_show_reads_the_default_file_in_the_current_folder(tmp_path, monkeypatch, capsys):
    write_results(tmp_path / "search_params.json")
    monkeypatch.chdir(tmp_path)
    assert main(["show"]) == 0
    assert "2.25x [2.23, 2.27]" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "{not json", '{"format": 2}',
                                     '{"format": 2, "settings": {}}'],
                         ids=["missing", "not-json", "no-settings", "empty"])
def test_show_without_results_is_one_line_exit_2(content, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no studies here either
    path = tmp_path / "search_params.json"
    if content is not None:
        path.write_text(content)
    assert main(["show", "--output", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_one_line_error(err)
    assert out == ""
    if content is None:
        assert not path.exists()
    else:
        assert path.read_text() == content


def test_show_end_to_end_through_the_console_script(tmp_path):
    proc = subprocess.run([TUNER, "show", "--output", str(tmp_path / "none.json")],
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr)


def test_patience_stops_searches_but_never_the_exhaustive_grid():
    from tuner.options import RunOptions

    def options(*args):
        return RunOptions.from_args(build_parser().parse_args(["run", *args]))

    assert options().stop_after == 40
    assert options("--patience", "7").stop_after == 7
    assert options("--patience", "0").stop_after is None
    assert options("--sampler", "grid", "--patience", "7").stop_after is None


def test_runs_on_a_gpu_are_judged_by_step_unless_asked_to_judge_them_whole():
    """--judge-whole: each timed run judged whole. By default (and in a worker, which gets the
    launcher's flags) runs on a GPU are timed step by step; on a CPU whole."""
    from tuner.options import RunOptions
    from tuner.timing import takes_step_times

    def policy(*args):
        return RunOptions.from_args(build_parser().parse_args(["run", *args])).timing

    assert takes_step_times(policy(), "cuda") and takes_step_times(policy(), "cuda:1")
    assert not takes_step_times(policy("--judge-whole"), "cuda")
    assert not takes_step_times(policy("--judge_whole"), "cuda")
    assert not takes_step_times(policy(), "cpu")


def test_the_goal_options_are_the_goals_own_fields():
    """The run options hold a `Goal` instead of repeating its fields; its flags still parse into
    it, with its defaults."""
    from dataclasses import fields

    from tuner.options import RunOptions
    from tuner.setting import Goal

    assert not {f.name for f in fields(RunOptions)} & {f.name for f in fields(Goal)}
    assert RunOptions.default("loss_budget") == Goal().loss_budget
    assert RunOptions.from_args(build_parser().parse_args(["run"])).goal == Goal()
    goal = RunOptions.from_args(build_parser().parse_args(
        ["run", "--req-score-loss", "0.05", "--metric", "ssim", "--req-time", "0.5",
         "--loss-bound", "upper"])).goal
    assert goal == Goal(loss_budget=0.05, metric="ssim", req_time=0.5, loss_bound="upper")


@pytest.mark.parametrize("device, points", [("cpu", 16), ("cuda", 48)])
def test_the_grid_size_check_counts_the_graphs_knob_on_cuda(device, points, tmp_path,
                                                            monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [a if a != "cpu" else device for a in TINY]
    assert main(["run", *args[:-1], str(points - 1), "--sampler", "grid"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert f"deepcache has {points} points" in err
    assert list(tmp_path.iterdir()) == []
