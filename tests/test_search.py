"""`tuner run` end to end on the tiny random-weight pipeline: studies, dedup, grid, resume,
requirement mode, the results file, and recovery from a worker killed mid-trial.

Runs are in-process (`tuner.cli.main`) where possible; the kill -9 test needs a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
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
from tuner.cli import main
from tuner.search.selection import choose, meeting_requirement
from tuner.search.studies import baseline_latencies

TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "3", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--no-progress"]
# SSIM loss with a loose budget: CLIP scores of random-weight models mean nothing.
FEASIBLE = ["--metric", "ssim", "--req-score-loss", "0.5"]
DEEPCACHE_GRID = [{"deepcache.cache_interval": i, "deepcache.cache_branch_id": b}
                  for i, b in itertools.product(range(2, 6), range(4))]
RESULT_KEYS = {"combo", "params", "speedup", "loss", "clip_loss", "latency", "baseline_latency",
               "clip_score", "baseline_clip_score", "psnr", "ssim", "study", "trial"}
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


def finished(study: optuna.Study) -> list:
    """Trials that count toward --trials: COMPLETE, and FAIL other than interrupted."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE or (
                t.state == TrialState.FAIL and "fail_reason" in t.user_attrs
                and t.user_attrs["fail_reason"] != "interrupted")]


def originals(trials) -> list:
    return [t for t in trials if "duplicate_of" not in t.user_attrs]


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
    assert len(trials) == 16  # --trials 40, but the space has only 16 distinct points
    assert all(t.state == TrialState.COMPLETE for t in trials)
    params = [t.params for t in trials]
    assert sorted(map(json.dumps, params)) == sorted(map(json.dumps, DEEPCACHE_GRID))
    assert len(grid.spy.evaluations) == 16
    assert len(originals(trials)) == 16
    assert "(space exhausted)" in grid.run.out


def test_study_directions_metric_names_and_user_attrs(grid):
    study = grid.study
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["speedup", "ssim_loss"]
    attrs = study.user_attrs
    assert attrs["combo"] == "deepcache"
    assert attrs["setting"] == {"pipe": "tiny-sd", "scheduler": "DDIM", "steps": 3,
                                "height": 128, "width": 128, "batch_size": 1, "num_samples": 2,
                                "seed": 42, "guidance_scale": 7.5,
                                "device": attrs["device"]}
    assert attrs["goal"] == {"loss_budget": 0.5, "metric": "ssim", "req_speedup": None,
                             "req_time": None}
    assert attrs["device"].startswith("CPU")
    assert {"torch", "optuna", "diffusers"} <= set(attrs["versions"])
    assert attrs["baseline"]["latency"] > 0 and "clip_score" in attrs["baseline"]
    history = baseline_latencies(grid.study)
    assert len(history) == 1 and history[0]["latency"] == attrs["baseline"]["latency"]
    # Readable name with every part that changes the measurements.
    for part in ("tiny-sd", "DDIM", "3 steps", "128x128", "batch 1", "2 samples", "seed 42",
                 "ssim", "deepcache"):
        assert part in study.study_name


def test_upper_bound_trials_carry_values_and_loss_budget_constraint(grid):
    for t in trials_in(grid.study, TrialState.COMPLETE):
        a = t.user_attrs
        assert t.values == [pytest.approx(a["speedup"]), pytest.approx(a["loss"])]
        assert a["loss"] == pytest.approx(1 - a["ssim"])
        assert t.constraints == {"loss_budget": pytest.approx(a["loss"] - 0.5)}
        assert a["config"] == accelerators.split_params(t.params)


def test_results_file_has_the_documented_layout(grid):
    data = grid.results
    assert data["format"] == 1
    (key, slot), = data["settings"].items()
    assert key == f"tiny-sd|DDIM|3 steps|128x128|batch 1|{grid.study.user_attrs['device']}"
    assert slot["setting"] == grid.study.user_attrs["setting"]
    assert slot["device"] == grid.study.user_attrs["device"]
    assert set(slot) == {"setting", "device", "max_speedup"}
    entry = slot["max_speedup"]
    assert set(entry) == {"goal", "required_speedup", "met", "chosen", "per_combo"}
    assert entry["required_speedup"] is None and entry["met"] is None
    assert entry["goal"] == grid.study.user_attrs["goal"]
    assert set(entry["per_combo"]) == {"deepcache"}
    chosen = entry["chosen"]
    assert set(chosen) == RESULT_KEYS
    assert chosen == entry["per_combo"]["deepcache"]
    assert chosen["combo"] == "deepcache" and chosen["study"] == grid.study.study_name
    # The chosen trial is the fastest feasible one.
    best = choose(grid.study.get_trials(), None).trial
    assert chosen["trial"] == best.number
    assert chosen["speedup"] == best.user_attrs["speedup"]
    assert chosen["params"] == best.user_attrs["config"]
    assert chosen["baseline_clip_score"] == grid.study.user_attrs["baseline"]["clip_score"]


def test_chosen_params_are_a_config_apply_accepts(grid, tiny_sd):
    params = next(iter(grid.results["settings"].values()))["max_speedup"]["chosen"]["params"]
    assert set(params) == {"deepcache"}
    assert set(params["deepcache"]) == {"cache_interval", "cache_branch_id"}
    with accelerators.apply(tiny_sd, params, steps=3) as generate:
        assert callable(generate)
        assert accelerators.leftovers(tiny_sd)  # it did patch something
    assert accelerators.leftovers(tiny_sd) == []


def test_show_prints_the_real_results(grid, capsys):
    assert main(["show", "--output", str(grid.output)]) == 0
    out = capsys.readouterr().out
    chosen = grid.results["settings"][next(iter(grid.results["settings"]))]["max_speedup"]["chosen"]
    assert f"deepcache: {chosen['speedup']:.2f}x" in out
    assert f"deepcache: {chosen['params']['deepcache']}" in out
    assert grid.output.read_bytes() == grid.text


def test_results_file_is_replaced_atomically(grid):
    writes = [(src, dst) for src, dst in grid.spy.replaces if dst == grid.output]
    assert writes, grid.spy.replaces
    for src, dst in writes:
        assert src.parent == dst.parent and src != dst
        assert not src.exists()
    assert files_under(grid.folder) >= {"search_params.json", "studies", "studies/tuner.db"}
    leftovers = [p for p in files_under(grid.folder)
                 if p not in ("search_params.json", "studies") and not p.startswith("studies/")]
    assert leftovers == []


def test_atomic_writes_get_an_ordinary_new_files_permissions(tmp_path):
    from tuner.search.results import write_atomically

    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "out.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_second_setting_keeps_the_first_settings_entry(grid, tmp_path):
    output = tmp_path / "search_params.json"
    shutil.copy(grid.output, output)
    run = run_tuner(tmp_path, "--combo", "deepcache", "--trials", "1", "--steps", "2",
                    *FEASIBLE)
    assert run.rc == 0, run.err
    data = read_json(output)
    assert len(data["settings"]) == 2
    first_key, first = next(iter(grid.results["settings"].items()))
    assert data["settings"][first_key] == first
    second = [k for k in data["settings"] if k != first_key][0]
    assert "2 steps" in second
    assert data["settings"][second]["max_speedup"]["chosen"]["combo"] == "deepcache"


def test_unparseable_results_file_is_left_alone(tmp_path, capsys):
    output = tmp_path / "search_params.json"
    output.write_bytes(b"{not json")
    rc = main(["run", *TINY, "--combo", "deepcache", "--trials", "1",
               "--studies", str(tmp_path / "studies"), "--output", str(output)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("tuner: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert output.read_bytes() == b"{not json"
    assert files_under(tmp_path) == {"search_params.json"}


# -- requirement mode on a copy of the grid's studies ------------------------------------------

REQ_TIME = 0.05


@pytest.fixture(scope="module")
def req(grid, tmp_path_factory):
    folder = tmp_path_factory.mktemp("req")
    shutil.copytree(grid.studies, folder / "studies")
    shutil.copy(grid.output, folder / "search_params.json")
    # Underscore spellings on purpose.
    extra = ["--combo", "deepcache", "--trials", "4", "--stop-when-met", "--metric", "ssim",
             "--req_score_loss", "0.5", "--batch_size", "1", "--num_samples", "2"]
    with spying() as spy:
        by_speedup = run_tuner(folder, *extra, "--req_speedup", "1.01")
    assert by_speedup.rc == 0, by_speedup.err
    after_speedup = read_json(folder / "search_params.json")
    studies = load_studies(folder / "studies")
    req_study = next(s for s in studies.values() if len(s.directions) == 1)
    trials_after_speedup = len(req_study.get_trials())
    by_time = run_tuner(folder, *extra, "--req_time", str(REQ_TIME))
    assert by_time.rc == 0, by_time.err
    return SimpleNamespace(folder=folder, spy=spy, after_speedup=after_speedup,
                           trials_after_speedup=trials_after_speedup,
                           after_time=read_json(folder / "search_params.json"),
                           studies=load_studies(folder / "studies"), grid=grid)


def _req_study(req) -> optuna.Study:
    found = [s for s in req.studies.values() if len(s.directions) == 1]
    assert len(found) == 1
    return found[0]


def test_requirement_and_upper_bound_modes_use_separate_studies(req):
    assert len(req.studies) == 2
    upper = req.studies[req.grid.study.study_name]
    assert upper.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert upper.metric_names == ["speedup", "ssim_loss"]
    assert len(upper.get_trials()) == 16  # untouched by the requirement runs
    study = _req_study(req)
    assert study.study_name != upper.study_name
    assert study.directions == [StudyDirection.MAXIMIZE]
    assert study.metric_names == ["speedup"]
    assert study.user_attrs["goal"]["req_speedup"] == 1.01
    for t in trials_in(study, TrialState.COMPLETE):
        assert t.values == [pytest.approx(t.user_attrs["speedup"])]
        assert t.constraints == {"loss_budget": pytest.approx(t.user_attrs["loss"] - 0.5)}


def test_requirement_answer_and_stop_when_met(req):
    study = _req_study(req)
    trials = study.get_trials()[:req.trials_after_speedup]
    entry = next(iter(req.after_speedup["settings"].values()))["req_speedup"]
    assert entry["required_speedup"] == 1.01
    choice = meeting_requirement(trials, 1.01)
    assert entry["met"] is choice.met
    assert entry["chosen"]["trial"] == (choice.trial.number if choice.trial else None)
    if choice.met:
        assert entry["chosen"]["speedup"] >= 1.01
    # --stop-when-met: no trial started once one met the requirement.
    met_at = next((i for i in range(len(trials))
                   if meeting_requirement(trials[:i + 1], 1.01).met), None)
    if met_at is None:
        assert len(finished(study)) >= 4
    else:
        assert len(trials) == met_at + 1, [(t.number, t.user_attrs.get("speedup")) for t in trials]


def test_req_time_turns_into_required_speedup_against_the_baseline(req):
    study = _req_study(req)
    latency = baseline_latencies(study)[-1]["latency"]
    entry = next(iter(req.after_time["settings"].values()))["req_speedup"]
    assert entry["goal"]["req_time"] == REQ_TIME and entry["goal"]["req_speedup"] is None
    assert entry["required_speedup"] == pytest.approx(latency / REQ_TIME, rel=1e-9)
    choice = meeting_requirement(study.get_trials(), entry["required_speedup"])
    assert entry["met"] is choice.met
    assert entry["chosen"]["trial"] == (choice.trial.number if choice.trial else None)


def test_results_file_keeps_each_mode(req):
    slot = next(iter(req.after_time["settings"].values()))
    assert set(slot) == {"setting", "device", "max_speedup", "req_speedup"}
    assert slot["max_speedup"] == next(iter(req.grid.results["settings"].values()))["max_speedup"]
    assert len(req.after_time["settings"]) == 1


# -- TPE with dedup ----------------------------------------------------------------------------

def test_tpe_never_evaluates_a_configuration_twice(tmp_path):
    with spying() as spy:
        run = run_tuner(tmp_path, "--combo", "deepcache", "--trials", "50", *FEASIBLE)
    assert run.rc == 0, run.err
    study = only_study(tmp_path / "studies")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) <= 50
    assert len(spy.evaluations) <= 16
    assert len(spy.evaluations) == len({json.dumps(c, sort_keys=True) for c in spy.evaluations})
    assert len(originals(complete)) == len(spy.evaluations)
    by_number = {t.number: t for t in trials}
    for t in complete:
        if "duplicate_of" not in t.user_attrs:
            continue
        first = by_number[t.user_attrs["duplicate_of"]]
        assert first.number < t.number
        assert "duplicate_of" not in first.user_attrs
        assert first.state == TrialState.COMPLETE
        assert first.params == t.params
        assert first.values == t.values
        assert first.constraints == t.constraints
    if len(finished(study)) < 50:  # stopped early: only because the space is exhausted
        assert len(originals(complete)) == 16


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
    assert len(finished(study)) == 3

    second = run_tuner(tmp_path, *args, "--trials", "5")
    assert second.rc == 0, second.err
    study = only_study(tmp_path / "studies")  # still one study
    assert len(finished(study)) == 5
    assert len(study.get_trials()) == 5
    assert [t.params for t in study.get_trials()][:3] == first

    with spying() as spy:
        third = run_tuner(tmp_path, *args, "--trials", "5")
    assert third.rc == 0, third.err
    study = only_study(tmp_path / "studies")
    assert len(study.get_trials()) == 5
    assert spy.evaluations == []
    assert len(baseline_latencies(study)) == 3


def test_invalid_configurations_count_and_are_not_retried(tmp_path):
    """Every configuration invalid (faked: nothing runs): FAIL trials with a reason count toward
    --trials; a repeat of an invalid configuration fails without an evaluation."""
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
        trials = study.get_trials()
        assert len(trials) == 6 and len(finished(study)) == 6
        for t in trials:
            assert t.state == TrialState.FAIL
            assert t.user_attrs["fail_reason"].startswith("fake: ")
            assert t.user_attrs.get("invalid") is True
        assert len(calls) == len(originals(trials))
        assert len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls)
        second = run_tuner(tmp_path, *args)
        assert second.rc == 0, second.err
    assert len(only_study(tmp_path / "studies").get_trials()) == 6  # nothing re-run
    assert len(calls) == len(originals(trials))
    entry = next(iter(read_json(tmp_path / "search_params.json")["settings"].values()))
    assert entry["max_speedup"]["chosen"] is None
    assert entry["max_speedup"]["per_combo"] == {"deepcache": None}


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
                if running and any(t.state == TrialState.COMPLETE for t in trials):
                    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
                        beats = con.execute("SELECT count(*) FROM trial_heartbeats WHERE "
                                            "trial_id = ?", (running[0]._trial_id,)).fetchone()[0]
                    if beats:
                        return running[0]
        time.sleep(0.1)
    return None


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
    assert trials[killed.number].user_attrs.get("fail_reason") != "surplus"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert len(finished(study)) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in trials]
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == killed.params
    # The re-queued trial ran first after the restart.
    assert retry.number == killed.number + 1
    later = [t for t in trials if t.number > killed.number and t is not retry]
    assert all(t.datetime_start >= retry.datetime_start for t in later)


# -- Ctrl-C mid-trial --------------------------------------------------------------------------


def test_ctrl_c_mid_trial_marks_it_interrupted_and_the_rerun_redoes_it(tmp_path):
    """KeyboardInterrupt (what Ctrl-C raises) inside the second evaluation."""
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
    assert not (tmp_path / "search_params.json").exists()
    study = only_study(tmp_path / "studies")
    first, stopped, queued = study.get_trials()
    assert first.state == TrialState.COMPLETE
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "interrupted"
    assert len(finished(study)) == 1  # the interrupted trial does not count
    assert queued.state == TrialState.WAITING and queued.params == stopped.params
    assert queued.system_attrs["failed_trial"] == stopped.number

    rerun = run_tuner(tmp_path, *args)
    assert rerun.rc == 0, rerun.err
    study = only_study(tmp_path / "studies")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE]
    assert trials[2].params == stopped.params
    assert trials[2].system_attrs["failed_trial"] == stopped.number
