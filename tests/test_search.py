"""`tuner run` end to end on the tiny random-weight pipeline: studies, dedup, grid, resume,
requirement mode, pruning, the results file, and recovery from a worker killed mid-trial.

Runs are in-process (`tuner.cli.main`) where possible; the kill -9 test needs a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

import tuner.evaluator
from tuner import accelerators
from tuner.answer import Answer, choose
from tuner.cli import main
from tuner.record import Failure, StudyRecord, TrialRecord, trial_records
from tuner.setting import Goal, Setting

# One timed pair: these tests are about the search; timing is tested on a simulated clock.
# 64 x 64, a quarter of tiny-sd's pixels: these tests are about the search, not the images.
TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "5", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1",
        "--threads", "1", "--height", "64", "--width", "64", "--no-progress"]
# SSIM loss with a loose budget: CLIP scores of random-weight models mean nothing.
FEASIBLE = ["--metric", "ssim", "--req-score-loss", "0.5"]
DEEPCACHE_GRID = [{"deepcache.cache_interval": i, "deepcache.cache_branch_id": b}
                  for i, b in itertools.product(range(2, 6), range(4))]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "PYTHONUNBUFFERED": "1"}
TUNER = str(Path(sys.executable).with_name("tuner"))


# -- helpers -----------------------------------------------------------------------------------

def run_tuner(folder: Path, *extra: str, studies: Path | None = None,
              output: Path | None = None) -> SimpleNamespace:
    """`tuner run` in this process; stdout/stderr captured (usable from module fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", *TINY, "--studies", str(studies or folder / "studies"),
            "--output", str(output or folder / "search_params.json"), *extra]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return SimpleNamespace(rc=rc, out=out.getvalue(), err=err.getvalue(), argv=argv)


@contextlib.contextmanager
def spying():
    """Count real pipeline evaluations and record os.replace calls during a run."""
    evaluations, replaces = [], []
    evaluate, replace = tuner.evaluator.Evaluator.evaluate, os.replace

    def counting_evaluate(self, config, *args, **kwargs):
        evaluations.append(json.loads(json.dumps(config)))
        return evaluate(self, config, *args, **kwargs)

    def recording_replace(src, dst, *args, **kwargs):
        replaces.append((Path(src), Path(dst)))
        return replace(src, dst, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuner.evaluator.Evaluator, "evaluate", counting_evaluate)
        mp.setattr(os, "replace", recording_replace)
        yield SimpleNamespace(evaluations=evaluations, replaces=replaces)


def db_url(studies: Path) -> str:
    return f"sqlite:///{studies / 'tuner.db'}"


def load_studies(studies: Path) -> dict[str, optuna.Study]:
    storage = optuna.storages.RDBStorage(db_url(studies))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def only_study(studies: Path) -> optuna.Study:
    found = load_studies(studies)
    assert len(found) == 1, list(found)
    return next(iter(found.values()))


def trials_in(study: optuna.Study, *states: TrialState):
    return study.get_trials(deepcopy=False, states=states or None)


def evaluated(study: optuna.Study) -> list[TrialRecord]:
    """Trials that count toward --trials: those that ran the pipeline."""
    return [r for r in trial_records(study) if r.evaluated]


def originals(trials) -> list:
    return [t for t in trials if TrialRecord.from_trial(t).original]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- grid search on deepcache: one shared run --------------------------------------------------

@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    with spying() as spy:
        run = run_tuner(folder, "--combo", "deepcache", "--sampler", "grid", "--trials", "40",
                        *FEASIBLE)
    assert run.rc == 0, run.err
    output = folder / "search_params.json"
    return SimpleNamespace(folder=folder, studies=folder / "studies", output=output, run=run,
                           spy=spy, study=only_study(folder / "studies"),
                           results=read_json(output), text=output.read_bytes())


def test_grid_covers_the_16_points_once_and_stops_by_itself(grid):
    trials = trials_in(grid.study)
    assert len(trials) == 16  # --trials 40, but the space has only 16 distinct points at 5 steps
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    params = [t.params for t in trials]
    assert sorted(map(json.dumps, params)) == sorted(map(json.dumps, DEEPCACHE_GRID))
    assert len(grid.spy.evaluations) == 16
    assert len(originals(trials)) == 16
    assert "(space exhausted)" in grid.run.out


def test_study_identity_context_and_records(grid):
    study = grid.study
    # The sampler aims at the answer: one objective, the loss budget a constraint.
    assert study.directions == [StudyDirection.MAXIMIZE]
    assert study.metric_names == ["speedup"]
    record = StudyRecord.of(study)
    assert record.combo == "deepcache"
    s = record.setting
    assert (s.pipe, s.scheduler, s.steps, s.height, s.width, s.batch_size, s.num_samples,
            s.seed, s.clip_model) == ("tiny-sd", "DDIM", 5, 64, 64, 1, 2, 42, "tiny-clip")
    assert s.device.startswith("CPU") and len(s.prompts) == 10
    assert len(record.prompts) == 2  # the prompts themselves are stored with the study
    assert record.goal == Goal(loss_budget=0.5, metric="ssim")
    assert {"torch", "optuna", "diffusers"} <= set(record.versions)
    assert len(record.baseline.clip_scores) == 2
    assert len(record.plain_latencies) == 1 and record.plain_latencies[0].threads == 1
    assert record.distinct_points == 16
    assert record.confirmation is not None  # the answer was raced before it was written
    for part in ("tiny-sd", "DDIM", "5 steps", "64x64", "batch 1", "2 samples", "seed 42",
                 "clip tiny-clip", f"prompts {s.prompts}", "ssim loss <= 0.5", "deepcache"):
        assert part in study.study_name


def test_trials_carry_values_constraint_and_their_sampler_stream(grid):
    complete = trials_in(grid.study, TrialState.COMPLETE)
    assert complete
    for t in complete:
        r = TrialRecord.from_trial(t)
        assert t.values == [pytest.approx(r.speed.value)]
        assert r.quality.loss.value == pytest.approx(1 - r.quality.ssim)
        assert t.constraints == {"loss_budget": pytest.approx(r.quality.loss.value - 0.5)}
        assert r.config == accelerators.split_params(t.params)
    seeds = {TrialRecord.from_trial(t).sampler_seed for t in trials_in(grid.study)}
    assert len(seeds) == 1 and None not in seeds  # one process, one recorded stream


def test_results_file_has_the_documented_layout(grid):
    data = grid.results
    assert data["format"] == 2
    (key, slot), = data["settings"].items()
    record = StudyRecord.of(grid.study)
    assert key == record.setting.key
    assert slot["setting"] == record.setting.as_dict()
    assert set(slot) == {"setting", "model", "answers"}
    (goal_key, entry), = slot["answers"].items()
    assert goal_key == "fastest | ssim loss <= 0.5"
    found = Answer.from_dict(record.setting, entry)
    assert found.required_speedup is None and found.met is None
    assert [c.combo for c in found.combos] == ["deepcache"]
    chosen = found.chosen
    assert chosen == found.combos[0].choice
    assert chosen.study == grid.study.study_name and chosen.confirmed
    # The chosen trial is the fastest feasible one by its confirmed speed.
    best, _ = choose(trial_records(grid.study), record.goal, record.confirmation)
    assert chosen.trial == best.number
    assert chosen.speed == record.confirmation.speeds[best.number]
    assert chosen.config == best.config
    flat = entry["chosen"]
    assert flat["speedup"] == chosen.speedup and flat["latency"] == chosen.latency
    assert flat["baseline_latency"] / flat["latency"] == pytest.approx(flat["speedup"])


def test_chosen_params_are_a_config_apply_accepts(grid, tiny_sd):
    chosen = next(iter(next(iter(grid.results["settings"].values()))["answers"].values()))
    params = chosen["chosen"]["params"]
    assert set(params) == {"deepcache"}
    with accelerators.apply(tiny_sd, params, steps=5) as generate:
        assert callable(generate)
        assert accelerators.leftovers(tiny_sd)  # it did patch something
    assert accelerators.leftovers(tiny_sd) == []


def test_show_prints_the_same_table_as_the_run(grid, capsys):
    assert main(["show", "--output", str(grid.output)]) == 0
    out = capsys.readouterr().out
    table = grid.run.out.split("\n\nwrote")[0].strip()
    for line in table.splitlines():
        assert line.strip() in out
    assert grid.output.read_bytes() == grid.text


def test_results_file_is_replaced_atomically(grid):
    writes = [(src, dst) for src, dst in grid.spy.replaces if dst == grid.output]
    assert writes, grid.spy.replaces
    for src, dst in writes:
        assert src.parent == dst.parent and src != dst
        assert not src.exists()
    assert files_under(grid.folder) >= {"search_params.json", "studies", "studies/tuner.db"}
    leftovers = [p for p in files_under(grid.folder)
                 if p not in ("search_params.json", "studies")
                 and not p.startswith("studies/")]
    assert leftovers == []


def test_atomic_writes_get_an_ordinary_new_files_permissions(tmp_path):
    from tuner.search.results import write_atomically

    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "out.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_another_setting_and_another_goal_keep_the_first_answer(grid, tmp_path):
    output = tmp_path / "search_params.json"
    shutil.copy(grid.output, output)
    studies = tmp_path / "studies"
    shutil.copytree(grid.studies, studies)
    assert run_tuner(tmp_path, "--combo", "deepcache", "--trials", "1", "--steps", "2",
                     *FEASIBLE).rc == 0
    assert run_tuner(tmp_path, "--combo", "deepcache", "--trials", "1", "--metric", "ssim",
                     "--req-score-loss", "0.001").rc == 0
    data = read_json(output)
    first_key, first = next(iter(grid.results["settings"].items()))
    assert len(data["settings"]) == 2
    second = [k for k in data["settings"] if k != first_key][0]
    assert "2 steps" in second
    # The tighter budget is another answer beside the first, not a replacement of it.
    answers = data["settings"][first_key]["answers"]
    assert set(answers) == {"fastest | ssim loss <= 0.5", "fastest | ssim loss <= 0.001"}
    assert answers["fastest | ssim loss <= 0.5"] == first["answers"]["fastest | ssim loss <= 0.5"]


def test_unusable_results_files_are_left_alone(tmp_path, capsys):
    output = tmp_path / "search_params.json"
    for content in (b"{not json", b'{"format": 2, "settings": {"k": []}}',
                    b'{"format": 2, "settings": {"k": {"setting": {}, "answers": {"g": {}}}}}',
                    b'{"format": 1, "settings": {}}'):
        output.write_bytes(content)
        rc = main(["run", *TINY, "--combo", "deepcache", "--trials", "1",
                   "--studies", str(tmp_path / "studies"), "--output", str(output)])
        err = capsys.readouterr().err
        assert rc == 2, content
        assert err.startswith("tuner: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err
        assert output.read_bytes() == content
        assert files_under(tmp_path) == {"search_params.json"}


def test_concurrent_merges_lose_no_answer(tmp_path):
    """Two processes merging 100 answers each into one file: all 200 are there."""
    code = f"""
import sys
from tuner.answer import Answer
from tuner.search.results import merge
from tuner.setting import Goal, Setting
for i in range(100):
    s = Setting(pipe="m", scheduler="DDIM", steps=int(sys.argv[1]) * 1000 + i, height=64,
                width=64)
    merge({str(tmp_path / 'out.json')!r}, Answer(s, Goal(), None, (), None, None))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)]) for k in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(read_json(tmp_path / "out.json")["settings"]) == 200


# -- requirement mode on a copy of the grid's studies ------------------------------------------

REQ_TIME = 0.05


@pytest.fixture(scope="module")
def req(grid, tmp_path_factory):
    folder = tmp_path_factory.mktemp("req")
    shutil.copytree(grid.studies, folder / "studies")
    shutil.copy(grid.output, folder / "search_params.json")
    # Underscore spellings on purpose.
    extra = ["--combo", "deepcache", "--trials", "4", "--stop_when_met", "--metric", "ssim",
             "--req_score_loss", "0.5", "--batch_size", "1", "--num_samples", "2"]
    by_speedup = run_tuner(folder, *extra, "--req_speedup", "1.01")
    assert by_speedup.rc == 0, by_speedup.err
    after_speedup = read_json(folder / "search_params.json")
    by_time = run_tuner(folder, *extra, "--req_time", str(REQ_TIME))
    assert by_time.rc == 0, by_time.err
    return SimpleNamespace(folder=folder, after_speedup=after_speedup, by_time=by_time,
                           after_time=read_json(folder / "search_params.json"),
                           studies=load_studies(folder / "studies"), grid=grid)


def _answer(data, goal_key) -> Answer:
    slot = next(iter(data["settings"].values()))
    return Answer.from_dict(Setting.from_dict(slot["setting"]), slot["answers"][goal_key])


def test_each_requirement_is_a_study_of_its_own(req):
    assert len(req.studies) == 3
    fastest = req.studies[req.grid.study.study_name]
    assert len(fastest.get_trials()) == 16  # untouched by the requirement runs
    required = [s for s in req.studies.values() if s is not fastest]
    assert len(required) == 2
    for study in req.studies.values():  # one objective each, the fastest too
        assert len(study.directions) == 1
        assert study.metric_names == ["speedup"]
        for t in trials_in(study, TrialState.COMPLETE):
            r = TrialRecord.from_trial(t)
            assert t.values == [pytest.approx(r.speed.value)]
    goals = sorted(StudyRecord.of(s).goal.requirement for s in required)
    assert goals == [f"latency <= {REQ_TIME:g}s", "speedup >= 1.01x"]


def test_requirement_answer_and_stop_when_met(req):
    study = next(s for s in req.studies.values() if "speedup >= 1.01x" in s.study_name)
    record = StudyRecord.of(study)
    found = _answer(req.after_speedup, "speedup >= 1.01x | ssim loss <= 0.5")
    assert found.required_speedup == 1.01
    chosen, met = choose(trial_records(study), record.goal, record.confirmation)
    assert found.met is met and found.chosen.trial == chosen.number
    if met:
        assert found.chosen.speedup >= 1.01
        # --stop-when-met: no evaluation started once one met the requirement.
        records = trial_records(study)
        first = min(r.number for r in records if r.feasible(record.goal)
                    and r.speed.value >= 1.01)
        assert all(r.number <= first or not r.evaluated for r in records)


def test_req_time_is_met_only_when_the_latency_shown_is_within_it(req):
    found = _answer(req.after_time, f"latency <= {REQ_TIME:g}s | ssim loss <= 0.5")
    assert found.goal.req_time == REQ_TIME
    chosen = found.chosen
    assert found.met is (chosen.latency <= REQ_TIME)
    line = [x for x in req.by_time.out.splitlines() if "per batch)" in x][0]
    assert f"({chosen.baseline_latency:.3f}s -> {chosen.latency:.3f}s per batch)" in line


def test_results_file_keeps_every_goal(req):
    slot = next(iter(req.after_time["settings"].values()))
    assert set(slot["answers"]) == {"fastest | ssim loss <= 0.5",
                                    "speedup >= 1.01x | ssim loss <= 0.5",
                                    f"latency <= {REQ_TIME:g}s | ssim loss <= 0.5"}
    grid_slot = next(iter(req.grid.results["settings"].values()))
    assert slot["answers"]["fastest | ssim loss <= 0.5"] == \
        grid_slot["answers"]["fastest | ssim loss <= 0.5"]


# -- TPE with dedup: repeats are free ----------------------------------------------------------

def test_tpe_never_evaluates_a_configuration_twice_and_repeats_are_free(tmp_path):
    with spying() as spy:
        run = run_tuner(tmp_path, "--combo", "deepcache", "--trials", "10", *FEASIBLE)
    assert run.rc == 0, run.err
    study = only_study(tmp_path / "studies")
    records = trial_records(study)
    assert len(evaluated(study)) == 10  # --trials counts evaluations
    assert len(spy.evaluations) == 10
    assert len({json.dumps(c, sort_keys=True) for c in spy.evaluations}) == 10
    by_number = {r.number: r for r in records}
    for r in records:
        if r.duplicate_of is None:
            continue
        first = by_number[r.duplicate_of]
        assert first.number < r.number and first.original
        assert first.config == r.config and first.speed == r.speed


def test_sampler_streams_differ_between_processes_and_are_recorded():
    from tuner.search.workers import process_seed

    assert process_seed(42) != process_seed(42)


def test_a_configuration_rejected_before_generating_is_free(tmp_path):
    """Checks that fail before any generation (here: branch 3, faked) do not count."""
    real = accelerators.check

    def check(pipe, config, **kwargs):
        if config["deepcache"]["cache_branch_id"] == 3:
            raise accelerators.NoEffect("fake: nothing to do")
        return real(pipe, config, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accelerators, "check", check)
        run = run_tuner(tmp_path, "--combo", "deepcache", "--trials", "12", "--sampler",
                        "grid", "--trials", "16", *FEASIBLE)
    assert run.rc == 0, run.err
    records = trial_records(only_study(tmp_path / "studies"))
    rejected = [r for r in records if r.invalid]
    assert len(rejected) == 4 and not any(r.evaluated for r in rejected)
    assert len([r for r in records if r.evaluated]) == 12


# -- grid refused ------------------------------------------------------------------------------

@pytest.mark.parametrize("combo, trials, size", [("deepcache+tgate", "200", "28,800"),
                                                  ("deepcache+tome", "100", "576"),
                                                  ("deepcache", "15", "16")])
def test_grid_larger_than_trials_is_refused(combo, trials, size, tmp_path, capsys):
    rc = main(["run", *TINY, "--combo", combo, "--sampler", "grid", "--trials", trials,
               "--studies", str(tmp_path / "studies"),
               "--output", str(tmp_path / "search_params.json")])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith("tuner: error:") and err.count("\n") == 1, err
    assert size in err and combo in err and "Traceback" not in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


# -- resume ------------------------------------------------------------------------------------

def test_rerun_resumes_the_same_study(tmp_path):
    args = ["--combo", "deepcache", *FEASIBLE]
    assert run_tuner(tmp_path, *args, "--trials", "3").rc == 0
    study = only_study(tmp_path / "studies")
    first = [t.params for t in study.get_trials()]
    assert len(evaluated(study)) == 3

    second = run_tuner(tmp_path, *args, "--trials", "5")
    assert second.rc == 0, second.err
    study = only_study(tmp_path / "studies")  # still one study
    assert len(evaluated(study)) == 5
    assert [t.params for t in study.get_trials()][:len(first)] == first

    with spying() as spy:
        third = run_tuner(tmp_path, *args, "--trials", "5")
    assert third.rc == 0, third.err
    assert spy.evaluations == []
    assert len(evaluated(only_study(tmp_path / "studies"))) == 5
    # Nothing left to do: answered from the study, without measuring a baseline again.
    assert len(StudyRecord.of(only_study(tmp_path / "studies")).plain_latencies) == 2


def test_other_prompts_make_another_study(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red bus\na green field\na blue boat\n")
    assert run_tuner(tmp_path, "--combo", "deepcache", "--trials", "1", *FEASIBLE).rc == 0
    assert run_tuner(tmp_path, "--combo", "deepcache", "--trials", "1", *FEASIBLE,
                     "--prompts", str(prompts)).rc == 0
    studies = load_studies(tmp_path / "studies")
    assert len(studies) == 2
    stored = sorted(StudyRecord.of(s).prompts for s in studies.values())
    assert any(set(p) <= {"a red bus", "a green field", "a blue boat"} for p in stored)


def test_invalid_configurations_count_and_are_not_retried(tmp_path):
    """Every configuration invalid once generated (faked): FAIL trials with a reason count
    toward --trials; a repeat of an invalid configuration fails without an evaluation."""
    calls = []

    def unsupported(self, config, *args, **kwargs):
        calls.append(config)
        raise accelerators.Unsupported(f"fake: {config} unsupported")

    args = ["--combo", "deepcache", "--trials", "6", *FEASIBLE]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuner.evaluator.Evaluator, "evaluate", unsupported)
        first = run_tuner(tmp_path, *args)
        assert first.rc == 0, first.err
        study = only_study(tmp_path / "studies")
        records = trial_records(study)
        assert len(evaluated(study)) == 6
        for r in records:
            assert r.state == "FAIL" and r.fail_reason.startswith("fake: ") and r.invalid
        assert len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls) == 6
        second = run_tuner(tmp_path, *args)
        assert second.rc == 0, second.err
    assert len(calls) == 6  # nothing re-run
    slot = next(iter(read_json(tmp_path / "search_params.json")["settings"].values()))
    entry = next(iter(slot["answers"].values()))
    assert entry["chosen"] is None
    assert entry["per_combo"]["deepcache"]["chosen"] is None


# -- a worker killed mid-trial -----------------------------------------------------------------

def _poll_for_running(proc, studies: Path, timeout: float):
    """Wait until the study has a COMPLETE trial and a RUNNING one that has its params and a
    heartbeat; return the RUNNING trial."""
    deadline = time.monotonic() + timeout
    db = studies / "tuner.db"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if db.exists():
            try:
                found = load_studies(studies)
            except Exception:  # the database is being created
                found = {}
            for study in found.values():
                trials = study.get_trials()
                running = [t for t in trials
                           if t.state == TrialState.RUNNING and len(t.params) == 2]
                if running and any(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                                   for t in trials):
                    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
                        beats = con.execute("SELECT count(*) FROM trial_heartbeats WHERE "
                                            "trial_id = ?", (running[0]._trial_id,)).fetchone()[0]
                    if beats:
                        return running[0]
        time.sleep(0.1)
    return None


@pytest.mark.serial  # a 1 s heartbeat, failed after 3 s: alone on the cores
def test_kill_9_mid_trial_then_rerun_finishes_the_budget(tmp_path):
    command = [TUNER, "run", *TINY, "--combo", "deepcache", "--trials", "4", "--heartbeat", "1",
               *FEASIBLE, "--studies", str(tmp_path / "studies"),
               "--output", str(tmp_path / "search_params.json")]
    killed = None
    for attempt in range(3):  # again only if the kill landed between two trials
        log_path = tmp_path / f"attempt{attempt}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(command, env=SUBPROCESS_ENV, cwd=tmp_path, stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                seen = _poll_for_running(proc, tmp_path / "studies", timeout=120)
                if seen is None:
                    pytest.fail(f"no RUNNING trial seen (exit {proc.poll()}): "
                                f"{log_path.read_text()[-2000:]}")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == -signal.SIGKILL
        running = trials_in(only_study(tmp_path / "studies"), TrialState.RUNNING)
        if running:  # left behind by the killed process
            assert len(running) == 1
            killed = running[0]
            break
    assert killed is not None and len(killed.params) == 2

    rerun = subprocess.run(command, env=SUBPROCESS_ENV, cwd=tmp_path, capture_output=True,
                           text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = only_study(tmp_path / "studies")
    trials = study.get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    assert TrialRecord.from_trial(trials[killed.number]).failure != Failure.SURPLUS
    assert len(evaluated(study)) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in trials]
    retry = retries[0]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == killed.params
    # The re-queued trial ran first after the restart.
    assert retry.number == killed.number + 1
    later = [t for t in trials if t.number > killed.number and t is not retry]
    assert all(t.datetime_start >= retry.datetime_start for t in later)


# -- --timeout ---------------------------------------------------------------------------------


def test_timeout_starts_no_trial_once_spent_then_races_and_answers(tmp_path, monkeypatch):
    """--timeout 25 on a clock that each evaluation advances by 10 s: the checkpoint after the
    third evaluation (30 s) starts no fourth, though --trials allows 20 and patience is off;
    the combo is raced and answered as usual (final, exit 0), and the combos not reached are
    not searched."""
    import dataclasses

    import tuner.app

    clock = SimpleNamespace(t=1000.0)
    evaluate, plan_of = tuner.evaluator.Evaluator.evaluate, tuner.app.plan_of

    def slow_evaluate(self, *args, **kwargs):
        clock.t += 10.0
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(tuner.evaluator.Evaluator, "evaluate", slow_evaluate)
    monkeypatch.setattr(tuner.app, "plan_of", lambda options, session: dataclasses.replace(
        plan_of(options, session), clock=lambda: clock.t))
    run = run_tuner(tmp_path, "--combo", "all", "--trials", "20", "--patience", "0",
                    "--timeout", "25", *FEASIBLE)
    assert run.rc == 0, run.err
    (study,) = load_studies(tmp_path / "studies").values()  # deepcache's only
    assert len(evaluated(study)) == 3
    assert not trials_in(study, TrialState.RUNNING, TrialState.WAITING)
    assert [line.split()[0] for line in run.out.splitlines()[1:2]] == ["deepcache"]
    assert "deepcache+tome" not in run.out
    # the user is told the combo's search was cut short, and where (this line failed before
    # the runner said so: only combos not reached at all were named)
    assert re.search(r"--timeout \(25s\) spent: deepcache stopped after 3 of \d+ evaluations",
                     run.out + run.err)
    (slot,) = read_json(tmp_path / "search_params.json")["settings"].values()
    (entry,) = slot["answers"].values()
    assert entry["status"]["final"] and entry["chosen"]["combo"] == "deepcache"
    assert entry["chosen"]["confirmed"] is not None


# -- Ctrl-C mid-trial --------------------------------------------------------------------------


def _originals(study: optuna.Study) -> list:
    """The study's trials less repeats (the sampler may propose a configuration again; the
    repeat is answered from the earlier trial)."""
    return [t for t in study.get_trials() if TrialRecord.from_trial(t).original]


def test_ctrl_c_mid_trial_marks_it_interrupted_and_the_rerun_redoes_it(tmp_path):
    """KeyboardInterrupt (what Ctrl-C raises) inside the second evaluation. The answer file
    holds the first trial, marked interrupted, whether or not a race measured it before the
    second evaluation: at one timing pair a race runs where a run set aside and measured again
    left the first trial three trusted pairs, and so an interval (the test asserted "not yet
    confirmed" and failed in about 1 run of 12)."""
    args = ["--combo", "deepcache", "--trials", "2", *FEASIBLE]
    evaluate = tuner.evaluator.Evaluator.evaluate
    calls = []

    def interrupted_second_time(self, config, *a, **kw):
        calls.append(config)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(self, config, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuner.evaluator.Evaluator, "evaluate", interrupted_second_time)
        run = run_tuner(tmp_path, *args)
    assert run.rc == 130
    assert "Traceback" not in run.err and "Resume with:" in run.err
    # What was known when it stopped is in the results file, not final.
    slot = next(iter(read_json(tmp_path / "search_params.json")["settings"].values()))
    answer = next(iter(slot["answers"].values()))
    assert answer["chosen"]["trial"] == 0
    assert not answer["status"]["final"] and answer["status"]["state"] == "interrupted"
    assert answer["status"]["requeued_trial"] == 1
    study = only_study(tmp_path / "studies")
    first, stopped, queued = _originals(study)
    assert first.state == TrialState.COMPLETE
    assert stopped.state == TrialState.FAIL
    assert TrialRecord.from_trial(stopped).failure == Failure.INTERRUPTED
    assert len(evaluated(study)) == 1  # the interrupted trial does not count
    assert queued.state == TrialState.WAITING and queued.params == stopped.params
    assert queued.system_attrs["failed_trial"] == stopped.number

    rerun = run_tuner(tmp_path, *args)
    assert rerun.rc == 0, rerun.err
    study = only_study(tmp_path / "studies")
    trials = _originals(study)
    assert [t.state for t in trials][:3] == [TrialState.COMPLETE, TrialState.FAIL,
                                             TrialState.COMPLETE]
    assert trials[2].params == stopped.params
    assert trials[2].system_attrs["failed_trial"] == stopped.number


def test_ctrl_c_while_optuna_creates_a_trial_waits_for_the_objective_to_requeue_it(
        tmp_path, terminal_sigint):
    """Workers rule 8: an interrupt that comes between the storage creating a trial and the
    objective claiming it must not leave a RUNNING trial that nobody owns. (Run as a background
    job, without `terminal_sigint`, it failed: the signal was ignored and the run went on.)"""
    import os
    import signal

    args = ["--combo", "deepcache", "--trials", "2", *FEASIBLE]
    init = optuna.Trial.__init__
    created = []

    def interrupted_at_the_second(self, *a, **kw):  # study.ask() builds the Trial last
        init(self, *a, **kw)
        created.append(self.number)
        if len(created) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, the moment the trial exists

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optuna.Trial, "__init__", interrupted_at_the_second)
        run = run_tuner(tmp_path, *args)
    assert run.rc == 130 and "Resume with:" in run.err
    study = only_study(tmp_path / "studies")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = trials[1]
    assert stopped.state == TrialState.FAIL
    assert TrialRecord.from_trial(stopped).failure == Failure.INTERRUPTED
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.system_attrs["failed_trial"] for t in queued] == [stopped.number]
    assert len(evaluated(study)) == 1


def test_everything_that_changes_a_trials_numbers_is_in_the_study_name():
    from dataclasses import replace

    from tuner.search.studies import study_name

    base = Setting(pipe="tiny-sd", scheduler="DDIM", steps=5, height=128, width=128,
                   batch_size=1, num_samples=2, seed=42, device="CPU", clip_model="tiny-clip",
                   prompts="abc")
    names = {study_name(s, "deepcache", Goal()) for s in (
        base, replace(base, clip_model="clip-l-random"), replace(base, prompts="def"),
        replace(base, num_samples=4), replace(base, seed=7), replace(base, guidance_scale=5.0),
        replace(base, device="NVIDIA H100"))}
    assert len(names) == 7
    goals = {study_name(base, "deepcache", g) for g in (
        Goal(), Goal(metric="ssim"), Goal(loss_budget=0.01), Goal(loss_bound="upper"),
        Goal(req_speedup=2.0), Goal(req_speedup=2.5), Goal(req_time=0.5))}
    assert len(goals) == 7


def test_the_whole_front_is_a_two_objective_study_of_its_own():
    from tuner.search.studies import open_study

    setting = Setting(pipe="tiny-sd", scheduler="DDIM", steps=5, height=128, width=128,
                      batch_size=1, num_samples=2, seed=42, device="CPU",
                      clip_model="tiny-clip", prompts="abc")
    storage = optuna.storages.InMemoryStorage()
    answer = open_study(storage, setting, "deepcache", Goal(), ["a prompt"])
    front = open_study(storage, setting, "deepcache", Goal(), ["a prompt"], full_front=True)
    assert answer.study_name != front.study_name
    assert (answer.metric_names, front.metric_names) == (["speedup"], ["speedup", "clip_loss"])
    assert front.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    # With a requirement the answer is one configuration either way.
    required = open_study(storage, setting, "deepcache", Goal(req_speedup=2.0), ["a prompt"],
                          full_front=True)
    assert required.metric_names == ["speedup"]


def test_a_rerun_with_nothing_left_to_do_answers_without_loading_the_model(grid, tmp_path):
    import tuner.pipelines

    shutil.copytree(grid.studies, tmp_path / "studies")
    shutil.copy(grid.output, tmp_path / "search_params.json")
    with pytest.MonkeyPatch.context() as mp:
        def refuse(*args, **kwargs):
            raise AssertionError("the model was loaded")

        mp.setattr(tuner.pipelines, "load_pipeline", refuse)
        again = run_tuner(tmp_path, "--combo", "deepcache", "--sampler", "grid", "--trials",
                          "40", *FEASIBLE)
    assert again.rc == 0, again.err
    table = grid.run.out.split("\n\nwrote")[0].strip()
    assert again.out.split("\n\nwrote")[0].strip() == table
    assert read_json(tmp_path / "search_params.json") == grid.results


def test_show_answers_from_the_studies_while_the_file_has_no_answer_yet(grid, tmp_path,
                                                                        capsys):
    shutil.copytree(grid.studies, tmp_path / "studies")
    assert main(["show", "--output", str(tmp_path / "none.json"), "--studies",
                 str(tmp_path / "studies")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"no answer in {str(tmp_path / 'none.json')!r} yet; from the studies")
    table = grid.run.out.split("\n\nwrote")[0].strip().splitlines()
    for line in table[:3]:
        assert line.strip() in out
    assert not (tmp_path / "none.json").exists()


def test_a_degenerate_metric_and_a_setting_with_nothing_to_accelerate_are_said(tmp_path):
    run = run_tuner(tmp_path, "--combo", "deepcache", "--trials", "2", "--steps", "1")
    assert run.rc == 0, run.err
    assert "CLIP losses mean nothing here; --metric ssim measures fidelity instead" in run.err
    assert "bit-identical to the plain pipeline at 1 steps: nothing to accelerate" in run.out
    assert "No configuration keeps" not in run.out


def test_a_rerun_after_an_interrupted_search_races_what_is_unraced(grid, tmp_path):
    """A race ran mid-search (it judged only the first feasible trial), then the search went on
    and was interrupted before its final race. The rerun has no trial left to evaluate, but
    its later trials are at their screening numbers: it must race them, not answer at once.
    At 9214cba the rerun accepted any stored race and answered "nothing left to do"."""
    from tuner.record import Confirmation

    shutil.copytree(grid.studies, tmp_path / "studies")
    shutil.copy(grid.output, tmp_path / "search_params.json")
    study = only_study(tmp_path / "studies")
    record = StudyRecord.of(study)
    first = min((r for r in trial_records(study) if r.feasible(record.goal)),
                key=lambda r: r.number)
    stored = record.confirmation
    # as 9214cba stored it: judged, every trial numbered up to the first feasible one
    StudyRecord.write_confirmation(study, Confirmation(
        "mid-search", stored.at, {first.number: first.speed}, stored.baseline_latency, 1,
        (first.number,), first.number))
    races = []
    race = tuner.evaluator.Evaluator.race
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuner.evaluator.Evaluator, "race",
                   lambda self, configs, *a, **kw: races.append(configs) or
                   race(self, configs, *a, **kw))
        again = run_tuner(tmp_path, "--combo", "deepcache", "--sampler", "grid", "--trials",
                          "40", *FEASIBLE)
    assert again.rc == 0, again.err
    assert races
    final = StudyRecord.of(only_study(tmp_path / "studies")).confirmation
    assert final.race != "mid-search" and final.judged is not None
    assert all(final.before(r.number) for r in trial_records(study) if r.finished)
    found = _answer(read_json(tmp_path / "search_params.json"), "fastest | ssim loss <= 0.5")
    assert found.chosen.confirmed == final.race
