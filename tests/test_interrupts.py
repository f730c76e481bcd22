"""Ctrl-C and SIGTERM are requests: recorded by the handler, acted on at checkpoints.

A raising handler threw its exception wherever the interpreter was, a library's finalizer
included, where it cannot propagate: Python printed "Exception ignored in ..." and a traceback,
and went on. The launcher's side is in test_postgres.py (SIGTERM and Ctrl-C to a launcher).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner import interrupts
from tuner.interrupts import Terminated
from tuner.record import trial_records

TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "5", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1",
        "--threads", "1", "--height", "64", "--width", "64", "--no-progress", "--no-artifacts",
        "--metric", "ssim", "--req-score-loss", "0.5", "--combo", "deepcache"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _default_sigint() -> None:
    """For a child: Ctrl-C as in a terminal (a shell's background job would ignore it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- the mechanism -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _sigint_as_in_a_terminal(terminal_sigint):
    """Failed before it when the suite ran as a background job (SIGINT inherited ignored):
    the first two tests below saw no signal at all."""


def test_a_signal_is_recorded_and_raised_once_at_the_next_checkpoint():
    with interrupts.deferred() as request:
        os.kill(os.getpid(), signal.SIGINT)
        interrupted_here = False  # the handler returned: nothing was raised
        assert request.signum == signal.SIGINT and request.pending
        with pytest.raises(Terminated) as raised:
            interrupts.checkpoint()
        os.kill(os.getpid(), signal.SIGINT)  # a second one, while the first is handled
        interrupts.checkpoint()  # ignored
    assert not interrupted_here
    assert isinstance(raised.value, KeyboardInterrupt) and raised.value.exit_code == 130
    assert request.exit_code(130) == 130 and request.exit_code(0) == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_request_no_checkpoint_acted_on_is_raised_when_deferred_ends():
    with pytest.raises(Terminated):
        with interrupts.deferred():
            with interrupts.deferred():  # nested: the outer one decides
                os.kill(os.getpid(), signal.SIGINT)
            inner_ended_quietly = True
    assert inner_ended_quietly


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.deferred() as request:
            os.kill(os.getpid(), signal.SIGINT)
            interrupts.checkpoint()
        assert request.signum is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sleep_ends_at_a_sigterm_and_sigterm_is_ignored_after_the_stop():
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        with interrupts.deferred():
            began = time.monotonic()
            timer.start()
            with pytest.raises(Terminated) as raised:
                interrupts.sleep(30)
            waited = time.monotonic() - began
        assert raised.value.exit_code == 143 and raised.value.signum == signal.SIGTERM
        assert waited < 10  # 0.2 s and a slice, on a quiet machine
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)


def test_outside_deferred_a_checkpoint_does_nothing():
    interrupts.checkpoint()
    interrupts.sleep(0.01)


# -- a real run, stopped while a finalizer runs -------------------------------------------------

# `tuner run` whose first evaluation drops an object with a slow finalizer, as tokenizers'
# regex objects are (their `__del__` was where the stray tracebacks came from). The test sends
# the signal while the finalizer runs; the finalizer then waits for the test to say it was sent.
IN_A_FINALIZER = """
import sys, time
from pathlib import Path
import tuner.evaluator
from tuner.cli import main

inside, sent = Path(sys.argv[1]), Path(sys.argv[2])
evaluate = tuner.evaluator.Evaluator.evaluate

class Finalized:
    def __del__(self):
        inside.touch()
        deadline = time.monotonic() + 120
        while not sent.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

def evaluate_dropping_garbage(self, config, **kwargs):
    if not inside.exists():
        Finalized()  # dropped at once: its finalizer runs here
    return evaluate(self, config, **kwargs)

tuner.evaluator.Evaluator.evaluate = evaluate_dropping_garbage
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_inside_a_finalizer_stops_the_trial_without_a_traceback(signum, tmp_path):
    """Before interrupts.py (at 9214cba) the exception was raised inside the finalizer:
    "Exception ignored in: <function Finalized.__del__ ...>" with a traceback, and the run
    went on to its end as if no signal had come."""
    inside, sent = tmp_path / "inside", tmp_path / "sent"
    studies = tmp_path / "studies"
    args = ["run", *TINY, "--trials", "4", "--studies", str(studies),
            "--output", str(tmp_path / "out.json")]
    proc = subprocess.Popen([sys.executable, "-c", IN_A_FINALIZER, str(inside), str(sent),
                             *args], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 240
        while not inside.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no evaluation started"
            time.sleep(0.01)
        proc.send_signal(signum)
        sent.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert "Resume with:" in err
    url = f"sqlite:///{studies / 'tuner.db'}"
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    records = trial_records(study)
    (stopped,) = [r.number for r in records if r.fail_reason == "interrupted"]
    assert not [r for r in records if r.evaluated]  # it stopped in its first evaluation
    queued = [t.system_attrs.get("failed_trial") for t in study.get_trials()
              if t.state == TrialState.WAITING]
    assert queued == [stopped]


def test_sigterm_while_loading_stops_before_any_trial_in_one_line(tmp_path):
    """SIGTERM while the model loads: acted on at the next checkpoint (after loading, or
    before the baseline's first batch), "tuner: terminated", exit 143, no trial created."""
    studies = tmp_path / "studies"
    args = [a for a in TINY if a != "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "tuner", "run", *args, "--trials", "4",
                             "--studies", str(studies), "--output", str(tmp_path / "out.json")],
                            env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in proc.stderr:  # until it says it is loading
            said.append(line)
            if line.startswith("loading "):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        err = "".join(said) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert "tuner: terminated" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert not (studies / "tuner.db").exists()
