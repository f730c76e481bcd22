"""Studies on a real PostgreSQL server, and stopping runs the way clusters do.

tests/postgres.py starts the server (skipped, with the reason, only where its binaries cannot be
had). Two `tuner run --storage URL` processes share one study as processes on two hosts do; one
of them, "on another host" as far as the storage goes, is killed with SIGKILL mid-trial and its
trial is found by heartbeat and retried; the storage URL's password never shows. Without the
server: SIGTERM or Ctrl-C stops a launcher and its workers, and the dashboard refuses a
non-loopback address unless told.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from optuna.trial import TrialState
from postgres import running_server, why_not

from tuner.cli import main
from tuner.record import trial_records

# 64 x 64, a quarter of tiny-sd's pixels: these tests are about the storage, not the images.
TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "5", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1",
        "--threads", "1", "--height", "64", "--width", "64", "--no-progress", "--no-artifacts",
        "--metric", "ssim", "--req-score-loss", "0.5", "--combo", "deepcache"]
TUNER = str(Path(sys.executable).with_name("tuner"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("PGPASSWORD", None)
# serial: workers beat every second and are failed after 3 s without a beat; a test beside them
# on the same cores must not be what delays a beat
pytestmark = pytest.mark.serial

# A `tuner run` on "another host": its trials name that host, so no process here may judge them
# by process id; it hangs in its first evaluation, where the test kills it.
ON_ANOTHER_HOST = """
import os, socket, sys, time
from pathlib import Path
import tuner.evaluator
from tuner.cli import main

socket.gethostname = lambda: "another-host"
marker = Path(sys.argv[1])

def evaluate(self, config, **kwargs):
    marker.write_text(str(os.getpid()))
    time.sleep(600)

tuner.evaluator.Evaluator.evaluate = evaluate
sys.exit(main(sys.argv[2:]))
"""

# `tuner run --workers 2` as on a host with two GPUs (the CLI refuses workers on the CPU).
LAUNCHER = """
import sys
from tuner import app
from tuner.cli import build_parser
from tuner.options import RunOptions

app.worker_devices = lambda options: [None] * options.workers
argv = sys.argv[1:]
sys.exit(app.launch(RunOptions.from_args(build_parser().parse_args(argv), argv)))
"""


@pytest.fixture(scope="module")
def server():
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    with running_server() as started:
        yield started


@pytest.fixture
def database(server) -> str:
    return server.create_database()


def _until(condition, proc: subprocess.Popen, what: str, *, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"{what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _signal_once(proc: subprocess.Popen, condition, what: str, *, seconds: float = 240,
                 exit_within: float, signum: int = signal.SIGTERM) -> tuple[str, str]:
    """Send `signum` to `proc` once `condition()` holds; its output after it exits (killed if
    not)."""
    try:
        _until(condition, proc, what, seconds=seconds)
        proc.send_signal(signum)
        return proc.communicate(timeout=exit_within)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def only_study(url: str) -> optuna.Study:
    from tuner.search.studies import open_storage

    storage = open_storage(url)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def evaluated(study: optuna.Study) -> list:
    return [t for t, r in zip(study.get_trials(), trial_records(study)) if r.evaluated]


def distinct(trials) -> bool:
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    return len(params) == len(set(params))


def spellings(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote(password)]


# -- PostgreSQL ---------------------------------------------------------------------------------


def test_two_hosts_share_one_study_and_the_password_never_shows(server, database, tmp_path,
                                                                 capsys):
    url = server.url(database)  # the password in the URL: shown nowhere
    procs = [subprocess.Popen([TUNER, "run", *TINY, "--trials", "4", "--storage", url,
                               "--output", str(tmp_path / f"host{i}.json")],
                              env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-3000:]
        outputs += [out, err]
        assert f"studies in postgresql://tuner:***@127.0.0.1:{server.port}/" in out
    study = only_study(url)
    done = evaluated(study)
    assert len(done) == 4 and distinct(done)  # exactly --trials, none evaluated twice
    records = trial_records(study)
    assert len({r.worker["pid"] for r in records if r.worker}) == 2  # both took part
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING,
                                                             TrialState.WAITING)]

    # The report, the dashboard's studies, and errors that name the URL.
    assert main(["report", "--storage", url, "--out", str(tmp_path / "report.html")]) == 0
    report = (tmp_path / "report.html").read_text()
    assert f"postgresql://tuner:***@127.0.0.1:{server.port}/{database}" in report
    from tuner.search.studies import locate

    found = locate(storage=url)
    wrong = url.replace(quote(server.password, safe=""), "wrong-" + quote(server.password,
                                                                          safe=""))
    assert main(["report", "--storage", wrong]) == 2
    assert main(["run", *TINY, "--storage", wrong, "--output", str(tmp_path / "x.json")]) == 2
    said = capsys.readouterr()
    assert "password authentication failed" in said.err
    assert len(said.err.strip().splitlines()) == 2  # one line each
    shown = [*outputs, said.out, said.err, report, found.url, repr(found),
             *(p.read_text() for p in tmp_path.glob("*.json")), server.dump(database)]
    for text in shown:
        for spelling in spellings(server.password):
            assert spelling not in text


@pytest.mark.parametrize("url, shown", [
    ("postgresql://tuner:s3cret%40x@db.example:5432/tuner",
     "postgresql://tuner:***@db.example:5432/tuner"),
    ("postgresql://tuner:s3cret@x@db.example/tuner", "postgresql://tuner:***@db.example/tuner"),
    ("postgresql://tuner@db.example/tuner?password=s3cret&sslmode=require",
     "postgresql://tuner@db.example/tuner?password=***&sslmode=require"),
], ids=["encoded", "unencoded-at", "query"])
def test_the_resume_command_and_the_footer_show_no_password(url, shown, capsys):
    from tuner import app
    from tuner.cli import build_parser
    from tuner.options import RunOptions

    argv = ["run", "--pipe", "tiny-sd", "--storage", url]
    options = RunOptions.from_args(build_parser().parse_args(argv), argv)
    assert app._shown_url(options) == shown
    app._print_resume(options)
    err = capsys.readouterr().err
    assert shown in err and "PGPASSWORD" in err and "s3cret" not in err


def test_a_worker_killed_on_another_host_is_retried_by_heartbeat(server, database, tmp_path):
    """SIGKILL mid-trial to a process on "another host", while this host's process works on
    the same study: its trial is failed by heartbeat and retried here; the rerun resumes.
    The URL holds no password: PGPASSWORD gives it, as libpq's ~/.pgpass would."""
    url = server.url(database, password=False)
    env = {**ENV, "PGPASSWORD": server.password}
    args = ["run", *TINY, "--trials", "5", "--heartbeat", "1", "--storage", url,
            "--output", str(tmp_path / "out.json")]
    marker = tmp_path / "evaluating"
    victim = subprocess.Popen([sys.executable, "-c", ON_ANOTHER_HOST, str(marker), *args],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    survivor = None
    try:
        _until(lambda: marker.exists(), victim, "the victim never reached an evaluation")
        survivor = subprocess.Popen([TUNER, *args], env=env, cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        study = only_study(server.url(database))
        _until(lambda: any(r.worker == {"host": socket.gethostname(), "pid": survivor.pid}
                           and r.state == "RUNNING" for r in trial_records(study)),
               survivor, "the survivor never started a trial")
        victim.send_signal(signal.SIGKILL)  # in the middle of its trial, the other one working
        victim.wait(timeout=30)
        out, err = survivor.communicate(timeout=400)
    finally:
        for proc in (survivor, victim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert survivor.returncode == 0, err[-3000:]

    study = only_study(server.url(database))
    trials = study.get_trials()
    records = {r.number: r for r in trial_records(study)}
    (killed,) = [t for t in trials if (records[t.number].worker or {}).get("host")
                 == "another-host"]
    assert killed.state == TrialState.FAIL
    assert records[killed.number].fail_reason is None  # by heartbeat, not by its process id
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed.params
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert records[retry.number].worker["pid"] == survivor.pid  # retried by the other host
    done = evaluated(study)
    assert len(done) == 5 and distinct(done)

    rerun = subprocess.run([TUNER, *args], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = only_study(server.url(database))
    done = evaluated(study)
    assert len(done) == 5 and distinct(done)  # nothing left to do, nothing done twice
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING,
                                                             TrialState.WAITING)]


def test_a_host_with_another_gpu_works_on_studies_of_its_own(server, database):
    from tuner.search.studies import load_group, open_storage, open_study
    from tuner.setting import Goal, Setting

    storage = open_storage(server.url(database))
    h100 = Setting(pipe="tiny-sd", scheduler="DDIM", steps=5, height=64, width=64, batch_size=1,
                   num_samples=2, seed=42, device="NVIDIA H100 80GB HBM3",
                   clip_model="tiny-clip", prompts="abc")
    a100 = replace(h100, device="NVIDIA A100-SXM4-80GB")
    goal = Goal()
    first = open_study(storage, h100, "deepcache", goal, ["a prompt"])
    first.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    second = open_study(storage, a100, "deepcache", goal, ["a prompt"])
    assert first.study_name != second.study_name and not second.get_trials()
    ((_, record, trials),) = load_group(storage, a100, goal, ["deepcache"])
    assert record.setting.device == "NVIDIA A100-SXM4-80GB" and trials == []


# -- SIGTERM ------------------------------------------------------------------------------------


def _running_trials(db: Path) -> list:
    url = f"sqlite:///{db}"
    try:
        names = optuna.get_all_study_names(url)
    except Exception:  # not created yet
        return []
    return [r for name in names
            for r in trial_records(optuna.load_study(study_name=name, storage=url))
            if r.state == "RUNNING" and r.canonical is not None]


def _processes_naming(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_or_ctrl_c_to_a_launcher_stops_its_workers_and_requeues_their_trials(
        signum, tmp_path):
    """Failed 2 times in 7 at 9214cba: the signal raised its exception wherever a worker was,
    a tokenizer's finalizer included, and stderr carried "Exception ignored in ..." and its
    traceback."""
    studies = tmp_path / "studies"
    args = ["run", *TINY, "--steps", "10", "--trials", "16", "--workers", "2",
            "--studies", str(studies), "--output", str(tmp_path / "out.json")]
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], env=ENV, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                # Ctrl-C as in a terminal (a shell's background job ignores it)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out, err = _signal_once(launcher, lambda: _running_trials(studies / "tuner.db"),
                            "no trial started", exit_within=120, signum=signum)
    assert launcher.returncode == 128 + signum, err[-3000:]
    assert "Resume with:" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert _processes_naming(str(studies)) == []  # no worker left behind
    url = f"sqlite:///{studies / 'tuner.db'}"
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    records = trial_records(study)
    assert not [r for r in records if r.state == "RUNNING"]
    interrupted = [r.number for r in records if r.fail_reason == "interrupted"]
    assert interrupted  # the trial that ran was stopped cleanly...
    queued = [t.system_attrs.get("failed_trial") for t in study.get_trials()
              if t.state == TrialState.WAITING]
    assert sorted(queued) == sorted(interrupted)  # ...and is queued to run again


# -- the dashboard ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_dashboard_refuses_a_non_loopback_host(host, tmp_path, capsys):
    assert main(["dashboard", "--studies", str(tmp_path), "--host", host]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tuner: error: --host") and "--allow-remote" in err
    assert len(err.splitlines()) == 1


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_dashboard_on_all_interfaces_with_allow_remote_warns_once(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    optuna.storages.RDBStorage(f"sqlite:///{studies / 'tuner.db'}")  # an empty study database
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([TUNER, "dashboard", "--studies", str(studies), "--host", "0.0.0.0",
                             "--port", str(port), "--allow-remote"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = _signal_once(proc, lambda: _answers(f"http://127.0.0.1:{port}/dashboard/"),
                            "the dashboard did not answer", seconds=90, exit_within=30)
    assert proc.returncode == 0
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("tuner: warning:")
    assert "no authentication" in warnings[0]
    assert f"0.0.0.0:{port}/dashboard/" in out
