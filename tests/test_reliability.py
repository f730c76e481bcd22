"""Failing trials and several workers on one study.

A trial that raises inside an accelerator, runs out of memory or produces NaN/black images fails
with its reason on the trial; the pipeline is plain again and the study goes on. Two worker
processes share one study and complete exactly the requested trials, never evaluating a
configuration twice, and the SQLite database stays intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuner import pipelines
from tuner.accelerators import leftovers
from tuner.accelerators.deepcache import DeepCache
from tuner.cli import main
from tuner.record import Failure, StudyRecord, trial_records

# 64 x 64, a quarter of tiny-sd's pixels: these tests are about the search, not the images.
TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "5", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1",
        "--threads", "1", "--height", "64", "--width", "64", "--no-progress", "--no-artifacts",
        "--metric", "ssim", "--req-score-loss", "0.5"]
TUNER = str(Path(sys.executable).with_name("tuner"))


def study_of(studies: Path) -> optuna.Study:
    url = f"sqlite:///{studies / 'tuner.db'}"
    (name,) = optuna.get_all_study_names(url)
    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture
def loaded(monkeypatch):
    """The pipelines `tuner run` loads in this process."""
    pipes = []
    original = pipelines.load_pipeline

    def load(*args, **kwargs):
        pipes.append(original(*args, **kwargs))
        return pipes[-1]

    monkeypatch.setattr(pipelines, "load_pipeline", load)
    return pipes


def break_deepcache(monkeypatch, generate_instead):
    """DeepCache patches the pipeline for real, then generates through `generate_instead`."""
    original = DeepCache.patch

    @contextlib.contextmanager
    def patch(self, pipe, params, generate, *, absorbed):
        with original(self, pipe, params, generate, absorbed=absorbed) as run:
            yield lambda **kwargs: generate_instead(run, **kwargs)

    monkeypatch.setattr(DeepCache, "patch", patch)


def _raise(error):
    def generate(run, **kwargs):
        raise error
    return generate


def _images(fill):
    def generate(run, **kwargs):
        out = run(**kwargs)
        out.images = torch.full_like(out.images, fill)
        return out
    return generate


@pytest.mark.parametrize("generate, reason", [
    (_raise(RuntimeError("boom inside the accelerator")),
     "RuntimeError: boom inside the accelerator"),
    (_raise(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")),
     "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"),
    (_images(float("nan")), "produced non-finite (NaN or inf) images"),
    (_images(0.0), "produced black images"),
], ids=["raises", "out-of-memory", "nan-images", "black-images"])
def test_a_failing_trial_is_recorded_and_the_study_goes_on(generate, reason, tmp_path,
                                                           monkeypatch, loaded, capsys):
    break_deepcache(monkeypatch, generate)
    rc = main(["run", *TINY, "--combo", "deepcache", "--trials", "3",
               "--studies", str(tmp_path / "studies"), "--output", str(tmp_path / "out.json")])
    assert rc == 0
    trials = study_of(tmp_path / "studies").trials
    # The sampler may propose a failed configuration again: that repeat is answered from the
    # earlier trial (failed for the same reason) and does not count among the 3.
    originals = [r for r in trial_records(trials) if r.original]
    assert len(originals) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert {t.user_attrs["fail_reason"] for t in trials} == {reason}
    (pipe,) = loaded
    assert leftovers(pipe) == []  # each failure left the pipeline plain
    assert "no feasible configuration" in capsys.readouterr().out
    result = json.loads((tmp_path / "out.json").read_text())
    (slot,) = result["settings"].values()
    assert next(iter(slot["answers"].values()))["chosen"] is None


def test_the_study_goes_on_after_a_crash(tmp_path, monkeypatch, loaded):
    calls = {"n": 0}

    def first_call_fails(run, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("only once")
        return run(**kwargs)

    break_deepcache(monkeypatch, first_call_fails)
    rc = main(["run", *TINY, "--combo", "deepcache", "--sampler", "grid", "--trials", "16",
               "--studies", str(tmp_path / "studies"),
               "--output", str(tmp_path / "out.json")])
    assert rc == 0
    trials = study_of(tmp_path / "studies").trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: only once"
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 15
    (pipe,) = loaded
    assert leftovers(pipe) == []


def _launch_workers(tmp_path: Path, monkeypatch, *extra: str) -> optuna.Study:
    """`tuner run --workers 2` through the launcher, as on a host with two GPUs: the CPU has
    one device, which `tuner run` refuses to share, so the launcher is told of two here."""
    from tuner import app
    from tuner.cli import build_parser
    from tuner.options import RunOptions

    argv = ["run", *TINY, "--combo", "deepcache", "--workers", "2", "--studies",
            str(tmp_path / "studies"), "--output", str(tmp_path / "out.json"), *extra]
    monkeypatch.setattr(app, "worker_devices", lambda options: [None, None])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    options = RunOptions.from_args(build_parser().parse_args(argv), argv)
    assert app.run_workers(options) == 0
    return study_of(tmp_path / "studies")


def _together(tmp_path: Path, *extra: str) -> optuna.Study:
    """Two identical `tuner run` commands started together on one studies folder, as
    processes on two hosts sharing --storage do."""
    command = [TUNER, "run", *TINY, "--combo", "deepcache", "--studies",
               str(tmp_path / "studies"), "--output", str(tmp_path / "out.json"), *extra]
    procs = [subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    return study_of(tmp_path / "studies")


def _evaluated(study: optuna.Study) -> list:
    return [t for t, r in zip(study.trials, trial_records(study)) if r.evaluated]


def _integrity(studies: Path) -> str:
    with contextlib.closing(sqlite3.connect(studies / "tuner.db")) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def test_two_workers_complete_exactly_the_trials_without_repeating_a_configuration(
        tmp_path, monkeypatch, capsys):
    study = _launch_workers(tmp_path, monkeypatch, "--trials", "8")
    evaluated = _evaluated(study)
    assert len(evaluated) == 8
    records = trial_records(study)
    assert all(r.fail_reason == "surplus" or r.duplicate_of is not None
               for r in records if not r.evaluated)
    params = [json.dumps(t.params, sort_keys=True) for t in evaluated]
    assert len(params) == len(set(params))  # no configuration evaluated twice
    workers = {(r.worker["pid"], r.sampler_seed) for r in records if r.evaluated}
    assert len({pid for pid, _ in workers}) == 2  # both workers did trials...
    assert len({seed for _, seed in workers}) == 2  # ...each with its own sampler stream
    assert len(StudyRecord.of(study).plain_latencies) == 2  # one baseline per worker
    assert StudyRecord.of(study).confirmation is not None  # worker 0 confirmed the answer
    assert _integrity(tmp_path / "studies") == "ok"
    assert "deepcache" in capsys.readouterr().out  # the launcher printed the answer table
    assert (tmp_path / "out.json").is_file()


def test_two_processes_started_together_walk_the_grid_once(tmp_path):
    study = _together(tmp_path, "--sampler", "grid", "--trials", "16")
    params = [json.dumps(t.params, sort_keys=True) for t in _evaluated(study)]
    assert len(params) == 16 and len(set(params)) == 16
    seeds = {r.sampler_seed for r in trial_records(study)}
    assert len(seeds) == 2  # not one stream twice, in lockstep
    assert _integrity(tmp_path / "studies") == "ok"


def test_processes_claiming_queued_trials_never_claim_one_twice(tmp_path):
    """Four processes take 200 queued trials from one SQLite study: each is taken once.

    Failed before the fix (4 of 4 runs: 11 to 80 trials taken twice): SQLite ignores Optuna's
    SELECT ... FOR UPDATE and Python's sqlite3 began the claim's transaction only at its write,
    so two processes read one trial WAITING and both ran it; the second to finish stopped with
    "Cannot tell a COMPLETE trial" (seen as a flaky failure of the test above)."""
    import multiprocessing

    import claims

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    study = optuna.create_study(study_name="queue", storage=url)
    for x in range(200):
        study.enqueue_trial({"x": x})
    context = multiprocessing.get_context("spawn")
    found = context.Queue()
    # The target lives in a module without torch: each spawned process imports only that.
    procs = [context.Process(target=claims.claim_all, args=(url, found)) for _ in range(4)]
    for proc in procs:
        proc.start()
    claimed = [t for _ in procs for t in found.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
    assert len(claimed) == 200 and len(set(claimed)) == 200


def test_two_processes_started_together_do_not_propose_in_lockstep(tmp_path):
    study = _together(tmp_path, "--trials", "6")
    records = sorted(trial_records(study), key=lambda r: r.number)
    assert sum(r.evaluated for r in records) == 6
    # Each process draws from a stream of its own (the same stream in both gave pairs of twins:
    # both proposed the same sequence of configurations).
    proposed: dict[int, list[str]] = {}
    for r in records:
        if r.canonical is not None:
            proposed.setdefault(r.worker["pid"], []).append(r.canonical)
    assert len(proposed) == 2 and len({r.sampler_seed for r in records}) == 2
    first, second = proposed.values()
    if min(len(first), len(second)) >= 3:  # identical by chance: 1 in 16^3
        assert first[:3] != second[:3]


def test_more_workers_than_gpus_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rc = main(["run", "--pipe", "tiny-sd", "--device", "cuda", "--workers", "2",
               "--studies", str(tmp_path / "studies")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--workers 2 needs as many GPUs; 1 visible" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "studies").exists()


def test_an_interrupted_grid_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the 6th evaluation; the rerun finishes the grid: every point exactly once."""
    import tuner.evaluator

    evaluate = tuner.evaluator.Evaluator.evaluate
    calls = []

    def interrupted_sixth_time(self, config, **kwargs):
        calls.append(config)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return evaluate(self, config, **kwargs)

    args = ["run", *TINY, "--combo", "deepcache", "--sampler", "grid", "--trials", "16",
            "--studies", str(tmp_path / "studies"), "--output", str(tmp_path / "out.json")]
    with monkeypatch.context() as mp:
        mp.setattr(tuner.evaluator.Evaluator, "evaluate", interrupted_sixth_time)
        assert main(args) == 130
    assert "Resume with:" in capsys.readouterr().err
    assert main(args) == 0
    study = study_of(tmp_path / "studies")
    evaluated = [json.dumps(t.params, sort_keys=True) for t in _evaluated(study)]
    assert len(evaluated) == 16 and len(set(evaluated)) == 16
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [r.failure for r in trial_records(interrupted)] == [Failure.INTERRUPTED]


def test_a_sampler_seed_gives_each_worker_a_stream_of_its_own(tmp_path, monkeypatch):
    """--sampler-seed with --workers 2: each worker draws from its own stream, derived from
    the seed (the same ones for the same seed). Failed at 9214cba: every worker used the seed
    itself, and two workers proposed the same configuration 5 times in 6."""
    from tuner.search.workers import worker_seed

    study = _launch_workers(tmp_path, monkeypatch, "--trials", "6", "--sampler-seed", "7")
    seeds = {r.worker["pid"]: r.sampler_seed for r in trial_records(study)
             if r.worker is not None}
    assert len(seeds) == 2
    assert set(seeds.values()) == {worker_seed(7, 0), worker_seed(7, 1)}
    assert worker_seed(7, 0) == 7 and worker_seed(7, 1) != 7
    assert worker_seed(7, 1) == worker_seed(7, 1) != worker_seed(8, 1)
