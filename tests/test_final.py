"""Whether an answer is final: the run behind it completed, was interrupted (and where), or is
still going. `tuner show`, the results file and the report say which; a stopped run says what
it stopped. The scenarios of a user who stops a run, or looks at one still going, on tiny-sd.
"""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tuner.cli import main
from tuner.record import ENDED, OVERALL, RACED, SEARCH, RunMark, StudyRecord
from tuner.setting import Goal, Setting
from tuner.status import COMPLETE, INTERRUPTED, IN_PROGRESS, Status, status_of

# 64 x 64, a quarter of tiny-sd's pixels: these tests are about the run's status, not images.
TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "3", "--batch-size", "1",
        "--height", "64", "--width", "64", "--num-samples", "2", "--timing-pairs", "1",
        "--max-timing-pairs", "1", "--threads", "1", "--metric", "ssim", "--req-score-loss",
        "0.5", "--no-artifacts"]
ROOT = Path(__file__).resolve().parents[1]  # the child imports this tree's tuner
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}

# `tuner run` that stops at one point of its work (a hook, named by argv[1]) and waits there
# until the test has acted (signalled it, or looked at its results): "inside" says it is
# there, "go" lets it on. `evaluate`: the first evaluation; `answer`: the first answer written
# (a combo's, with combos still to go); `overall`: the overall race; `raced`: the first
# evaluation after a race (a mid-combo race, when the combo has trials to go).
AT_A_POINT = """
import sys, time
from pathlib import Path
import tuner.app, tuner.evaluator, tuner.search.runner
from tuner.cli import main

point, inside, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def wait_here():
    if inside.exists():
        return
    inside.touch()
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

def hooked(module, name):
    original = getattr(module, name)
    def hook(*args, **kwargs):
        if point == "answer":  # once the answer is written
            found = original(*args, **kwargs)
            wait_here()
            return found
        wait_here()
        return original(*args, **kwargs)
    setattr(module, name, hook)

raced = []

def race_then_wait():
    race, evaluate = tuner.search.runner.confirm_study, tuner.evaluator.Evaluator.evaluate
    def racing(*args, **kwargs):
        raced.append(True)
        return race(*args, **kwargs)
    def evaluating(*args, **kwargs):
        if raced:
            wait_here()
        return evaluate(*args, **kwargs)
    tuner.search.runner.confirm_study, tuner.evaluator.Evaluator.evaluate = racing, evaluating

{"evaluate": lambda: hooked(tuner.evaluator.Evaluator, "evaluate"),
 "raced": race_then_wait,
 "answer": lambda: hooked(tuner.app, "save_answer"),
 "overall": lambda: hooked(tuner.search.runner, "confirm_overall")}[point]()
sys.exit(main(sys.argv[4:]))
"""


class Run:
    """A `tuner run` in a child process, held at `point` until `go`."""

    def __init__(self, tmp_path: Path, point: str, args: list[str]):
        self.inside, self.go = tmp_path / "inside", tmp_path / "go"
        self.output = tmp_path / "search_params.json"
        self.studies = tmp_path / "studies"
        self.args = ["run", *args, "--studies", str(self.studies), "--output",
                     str(self.output)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AT_A_POINT, point, str(self.inside), str(self.go),
             *self.args], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def wait_inside(self) -> None:
        deadline = time.monotonic() + 300
        while not self.inside.exists():
            assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run never reached the point"
            time.sleep(0.01)

    def stop(self, signum: int) -> tuple[int, str]:
        self.proc.send_signal(signum)
        self.go.touch()
        _, err = self.proc.communicate(timeout=300)
        return self.proc.returncode, err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def status(self) -> dict:
        (slot,) = json.loads(self.output.read_text())["settings"].values()
        (entry,) = slot["answers"].values()
        return entry["status"]


@pytest.fixture
def running(tmp_path):
    runs = []

    def start(point: str, args: list[str]) -> Run:
        runs.append(Run(tmp_path, point, args))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def show(capsys, *args: str) -> str:
    assert main(["show", *args]) == 0
    return capsys.readouterr().out


def report(capsys, studies: Path, tmp_path: Path) -> str:
    out = tmp_path / "report.html"
    assert main(["report", "--studies", str(studies), "--out", str(out)]) == 0
    capsys.readouterr()
    return html.unescape(out.read_text())


# -- the three scenarios ----------------------------------------------------------------------


def test_ctrl_c_in_the_first_trial_is_shown_as_interrupted_there(running, tmp_path, capsys):
    """After Ctrl-C at trial 1 of 4, `show` printed "No configuration keeps ..." with no word
    of the interruption, and the results file had no mark of it; failed at 9214cba."""
    run = running("evaluate", [*TINY, "--no-progress", "--combo", "deepcache",
                               "--trials", "4"])
    run.wait_inside()
    rc, err = run.stop(signal.SIGINT)
    assert rc == 130, err[-3000:]
    assert ("interrupted during deepcache's search, at evaluation 1 of 4: trial 0, which was "
            "running, was marked failed and is queued to run again.") in err
    assert "Resume with:" in err and "Traceback" not in err
    status = run.status()
    assert status["final"] is False and status["state"] == "interrupted"
    assert status["where"] == "during deepcache's search, at evaluation 1 of 4"
    assert (status["signal"], status["requeued_trial"]) == ("SIGINT", 0)
    said = ("Not final: the run was interrupted (Ctrl-C) during deepcache's search, at "
            "evaluation 1 of 4; rerun the same command to resume.")
    assert said in show(capsys, "--output", str(run.output))
    assert said in report(capsys, run.studies, tmp_path)


def test_show_during_a_live_run_says_it_is_still_going_and_then_that_it_died(
        running, tmp_path, capsys):
    """During a live run with 3 combos still to go, `show` printed "Fastest within ...:
    deepcache ..., confirmed" with no word that the run was still going; failed at 9214cba.
    Killed outright, the run writes nothing more: `show` and the report find its process
    gone."""
    run = running("answer", [*TINY, "--no-progress", "--combo", "all", "--trials", "1"])
    run.wait_inside()  # deepcache's answer is written; three combos to go
    going = ("Not final: a run is still going, after deepcache's race; deepcache+tome, "
             "deepcache+tgate, deepcache+tome+tgate still to search.")
    out = show(capsys, "--output", str(run.output))
    assert "Fastest within ssim loss <= 0.5: deepcache" in out and going in out
    status = run.status()
    assert status["state"] == "in progress" and not status["final"]
    assert status["to_go"] == ["deepcache+tome", "deepcache+tgate", "deepcache+tome+tgate"]
    assert going in report(capsys, run.studies, tmp_path)

    rc, _ = run.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    out = show(capsys, "--output", str(run.output))
    assert ("Not final: the run was still going when this was written, after deepcache's "
            "race; deepcache+tome, deepcache+tgate, deepcache+tome+tgate still to search, and "
            "its process has ended since; rerun the same command to resume.") in out
    assert ("Not final: the run was stopped (its process ended without finishing) after "
            "deepcache's race; deepcache+tome, deepcache+tgate, deepcache+tome+tgate still to "
            "search") in report(capsys, run.studies, tmp_path)


def test_a_run_killed_after_its_first_race_leaves_that_races_answer(running, tmp_path, capsys):
    """A run killed outright (SIGKILL, as a batch job at its time limit) after its first race,
    mid-combo with trials to go, left no results file at all, though its study held the raced
    trial; failed before the answer was written after every race. Now the file names the
    race's best, confirmed, and says the run did not finish."""
    import optuna

    # three timing pairs give a speedup interval above 1, which a race judges mid-combo
    run = running("raced", [*TINY, "--timing-pairs", "3", "--max-timing-pairs", "3",
                            "--no-progress", "--combo", "deepcache", "--trials", "4"])
    run.wait_inside()  # the first race is over; the next evaluation waits
    rc, _ = run.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert run.output.is_file()
    (slot,) = json.loads(run.output.read_text())["settings"].values()
    (entry,) = slot["answers"].values()
    (name,) = optuna.get_all_study_names(f"sqlite:///{run.studies / 'tuner.db'}")
    race = StudyRecord.of(optuna.load_study(
        study_name=name, storage=f"sqlite:///{run.studies / 'tuner.db'}")).confirmation
    assert race is not None
    chosen = entry["chosen"]
    assert chosen["trial"] in race.speeds and chosen["confirmed"] == race.race
    assert chosen["speedup"] == race.speeds[chosen["trial"]].value
    assert not entry["status"]["final"]
    assert entry["status"]["phase"] == SEARCH
    out = show(capsys, "--output", str(run.output))
    assert "Not final: the run was still going when this was written, during deepcache's " \
        "search" in out and "its process has ended since" in out


def test_sigterm_during_the_overall_race_says_the_race_was_stopped(running, tmp_path, capsys):
    """SIGTERM during the final race said "the running trial was marked failed and is queued
    to run again" though no trial was running, and the answer's only sign of it was a missing
    ", confirmed"; failed at 9214cba. The rerun races again and completes."""
    args = [*TINY, "--combo", "all", "--trials", "1"]
    run = running("overall", [*args, "--no-progress"])
    run.wait_inside()
    rc, err = run.stop(signal.SIGTERM)
    assert rc == 143, err[-3000:]
    assert "terminated during the overall race: no trial was running; the rerun races again." \
        in err
    assert "marked failed" not in err and "queued to run again" not in err
    assert "Resume with:" in err and "Traceback" not in err
    status = run.status()
    assert (status["state"], status["phase"], status["signal"]) == \
        ("interrupted", "overall race", "SIGTERM")
    assert status["requeued_trial"] is None
    said = ("Not final: the run was terminated (SIGTERM) during the overall race; rerun the "
            "same command to resume.")
    assert said in show(capsys, "--output", str(run.output))

    assert main(["run", *args, "--studies", str(run.studies), "--output",
                 str(run.output)]) == 0
    out, err = capsys.readouterr()
    assert "confirming the overall answer" in err  # it raced again
    assert "Final: the run that wrote this answer completed." in out
    assert run.status()["final"] is True
    assert "Final: the run that wrote this answer completed." in show(
        capsys, "--output", str(run.output))


# -- the rules, on stored marks ------------------------------------------------------------------

SETTING = Setting(pipe="SD1.5", scheduler="DDIM", steps=50, height=512, width=512)


def _mark(worker: dict, phase: str, at: str, **kwargs) -> RunMark:
    return RunMark(worker, "t0", ("deepcache", "deepcache+tome"), 10, phase, at=at, **kwargs)


def _studies(*marks_by_study: tuple[RunMark, ...]):
    return [(StudyRecord(f"s{i}", SETTING, Goal(loss_budget=0.02), combo, runs=marks), [])
            for i, (combo, marks) in enumerate(zip(("deepcache", "deepcache+tome"),
                                                   marks_by_study))]


@pytest.fixture(scope="module")
def dead() -> dict:
    """A worker of this host whose process has ended."""
    import socket

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return {"host": socket.gethostname(), "pid": int(done.stdout)}


def test_the_status_follows_the_latest_marks(dead):
    import socket

    me = {"host": socket.gethostname(), "pid": os.getpid()}
    elsewhere = {"host": "another-host.example", "pid": dead["pid"]}
    searching = _mark(me, SEARCH, "2", combo="deepcache+tome")
    assert status_of(_studies((), ())) is None  # no run marked them: nothing is said
    live = status_of(_studies((searching,), (searching,)))
    assert live.state == IN_PROGRESS and live.where == \
        "during deepcache+tome's search, at evaluation 1 of 10"
    remote = status_of(_studies((replace(searching, worker=elsewhere),), ()))
    assert remote.state == IN_PROGRESS  # another host's process cannot be checked from here
    gone = status_of(_studies((replace(searching, worker=dead),), ()))
    assert gone.state == INTERRUPTED and gone.signal is None
    assert "stopped (its process ended without finishing)" in gone.text()
    raced = _mark(dead, RACED, "1", combo="deepcache")
    assert status_of(_studies((raced,), ())).to_go == ("deepcache+tome",)
    # A later run that ended supersedes, on each study, an earlier one that was stopped.
    stopped = _mark(dead, OVERALL, "1", stopped="SIGTERM")
    ended = replace(_mark(me, ENDED, "3"), started="t1")
    assert status_of(_studies((stopped, ended), (stopped, ended))).state == COMPLETE
    left = status_of(_studies((stopped, ended), (stopped,)))
    assert left.state == INTERRUPTED and left.where == "during the overall race"


def test_a_results_file_status_round_trips_and_a_bad_one_is_refused(tmp_path, capsys):
    from sample_results import write_results

    path = write_results(tmp_path / "search_params.json")
    data = json.loads(path.read_text())
    status = Status(INTERRUPTED, SEARCH, "during deepcache's search, at evaluation 3 of 8",
                    ("deepcache+tome",), "SIGINT", 2, {"host": "h", "pid": 1})
    for slot in data["settings"].values():
        for entry in slot["answers"].values():
            entry["status"] = status.as_dict()
    path.write_text(json.dumps(data))
    assert Status.from_dict(json.loads(json.dumps(status.as_dict()))) == status
    out = show(capsys, "--output", str(path))
    assert out.count("Not final: the run was interrupted (Ctrl-C) during deepcache's search, "
                     "at evaluation 3 of 8; deepcache+tome still to search") == 3
    entry["status"]["state"] = "paused"
    path.write_text(json.dumps(data))
    assert main(["show", "--output", str(path)]) == 2
    assert "unknown run state 'paused'" in capsys.readouterr().err


@pytest.mark.parametrize("phase, where, requeued, said", [
    (SEARCH, "during deepcache's search, at evaluation 3 of 8", 2,
     "interrupted during deepcache's search, at evaluation 3 of 8: trial 2, which was running, "
     "was marked failed and is queued to run again; deepcache+tome still to search."),
    (SEARCH, "during deepcache's search, at evaluation 3 of 8", None,
     "interrupted during deepcache's search, at evaluation 3 of 8: no trial was running; the "
     "rerun goes on from here; deepcache+tome still to search."),
    ("race", "during deepcache's race", None,
     "interrupted during deepcache's race: no trial was running; the rerun races again; "
     "deepcache+tome still to search."),
    (OVERALL, "during the overall race", None,
     "interrupted during the overall race: no trial was running; the rerun races again."),
    ("held-out", "during the held-out loss pass", None,
     "interrupted during the held-out loss pass: no trial was running; the rerun measures it "
     "again."),
])
def test_a_stopped_run_says_what_it_stopped(phase, where, requeued, said):
    """"The running trial was marked failed and is queued to run again" was said of every
    stop, though only a stop inside a trial re-queues one; failed at 9214cba."""
    to_go = ("deepcache+tome",) if phase in (SEARCH, "race") else ()
    assert Status(INTERRUPTED, phase, where, to_go, "SIGINT", requeued).stop_text() == said
