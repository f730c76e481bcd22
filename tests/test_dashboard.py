"""`tuner dashboard`: optuna-dashboard on the studies, with the trials' sample images."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from PIL import Image

from tuner.cli import main

TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "3", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1", "--no-progress",
        "--metric", "ssim", "--req-score-loss", "0.5", "--threads", "1"]
TUNER = str(Path(sys.executable).with_name("tuner"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard") / "studies"
    assert main(["run", *TINY, "--combo", "deepcache", "--trials", "2", "--studies", str(folder),
                 "--output", str(folder / "search_params.json")]) == 0
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, *, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.headers.get_content_type(), response.read()


def wait_for(url: str, proc: subprocess.Popen, *, seconds: float = 90) -> bytes:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"tuner dashboard exited with {proc.returncode}:\n{out}\n{err}")
        try:
            return get(url, timeout=2)[1]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {seconds}s")


def test_dashboard_lists_studies_and_sample_images(studies):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Started as from a terminal: under a shell's background job (CI scripts run so) SIGINT is
    # ignored, and the child would inherit that, so Ctrl-C could not be tested.
    proc = subprocess.Popen([TUNER, "dashboard", "--studies", str(studies), "--port", str(port)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        listing = json.loads(wait_for(f"{base}/api/studies", proc))
        storage = optuna.storages.RDBStorage(f"sqlite:///{studies / 'tuner.db'}")
        expected = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        assert {s["study_name"] for s in listing["study_summaries"]} == expected

        study_id = listing["study_summaries"][0]["study_id"]
        detail = json.loads(get(f"{base}/api/studies/{study_id}")[1])
        assert sorted(a["filename"] for a in detail["artifacts"]) == [
            "baseline_image0.jpg", "baseline_image1.jpg"]
        completed = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert completed
        trial = completed[0]
        names = sorted(a["filename"] for a in trial["artifacts"])
        assert names == [f"trial{trial['number']}_image0.jpg", f"trial{trial['number']}_image1.jpg"]
        kind, data = get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/"
                         f"{trial['artifacts'][0]['artifact_id']}")
        assert kind == "image/jpeg"
        assert Image.open(io.BytesIO(data)).size == (128, 128)
        # the web page itself is served too
        kind, page = get(f"{base}/dashboard/")
        assert kind == "text/html" and b"<html" in page.lower()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"tuner dashboard ignored Ctrl-C for 30 s:\n{err[-2000:]}")
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[0].startswith(f"optuna-dashboard: {base}/dashboard/")
    assert str(studies / "artifacts") in out.splitlines()[0]


def assert_one_line_error(err: str) -> None:
    assert err.startswith("tuner: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err


@pytest.mark.parametrize("args", [
    pytest.param(["--studies", "{tmp}/none"], id="no-folder"),
    pytest.param(["--studies", "{tmp}"], id="no-database"),
    pytest.param(["--storage", "sqlite:///{tmp}/missing.db"], id="storage-missing-file"),
    pytest.param(["--storage", "nonsense"], id="storage-not-a-url"),
    pytest.param(["--studies", "{tmp}", "--storage", "sqlite:///x.db"], id="both"),
])
def test_missing_studies_is_one_line_exit_2(args, tmp_path, capsys):
    rc = main(["dashboard", *[a.format(tmp=tmp_path) for a in args], "--port", "1"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert_one_line_error(err)
    assert not list(tmp_path.iterdir())  # no database created


def test_missing_studies_subprocess_exit_2(tmp_path):
    done = subprocess.run([TUNER, "dashboard", "--studies", str(tmp_path / "none")], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert_one_line_error(done.stderr)
    assert "no studies folder" in done.stderr


def test_port_in_use_is_one_line_exit_2(studies, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["dashboard", "--studies", str(studies), "--port", str(port)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert_one_line_error(err)
    assert f"cannot serve on 127.0.0.1:{port}" in err


def test_explicit_missing_artifact_folder_is_one_line_exit_2(studies, tmp_path, capsys):
    rc = main(["dashboard", "--studies", str(studies), "--artifacts", str(tmp_path / "nope")])
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err)
