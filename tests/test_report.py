"""`tuner report` (one self-contained HTML page, checked in a real headless Chromium) and the
sample-image artifacts `tuner run` stores for it and for optuna-dashboard."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from PIL import Image

from tuner import artifacts, report
from tuner.cli import main
from tuner.options import RunOptions
from tuner.presets import RANDOM_WEIGHTS_NOTE
from tuner.answer import speed_text
from tuner.record import SpeedEstimate, StudyRecord, TrialRecord

TINY = ["--pipe", "tiny-sd", "--device", "cpu", "--steps", "3", "--batch-size", "1",
        "--num-samples", "2", "--timing-pairs", "1", "--max-timing-pairs", "1", "--threads",
        "1", "--no-progress", "--metric", "ssim", "--req-score-loss", "0.5"]
COMBOS = ("deepcache", "deepcache+tome", "deepcache+tgate", "deepcache+tome+tgate")


def run(folder: Path, *args: str) -> None:
    rc = main(["run", *TINY, "--studies", str(folder), "--output",
               str(folder / "search_params.json"), *args])
    assert rc == 0


def storage_of(folder: Path):
    return optuna.storages.RDBStorage(f"sqlite:///{folder / 'tuner.db'}")


def assert_one_line_error(err: str) -> None:
    assert err.startswith("tuner: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), err


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """Every combo, a few trials each, with sample images (the default)."""
    folder = tmp_path_factory.mktemp("report") / "studies"
    run(folder, "--combo", "all", "--trials", "3")
    return folder


@pytest.fixture(scope="module")
def bare_studies(tmp_path_factory) -> Path:
    """One combo, one trial, --no-artifacts."""
    folder = tmp_path_factory.mktemp("bare") / "studies"
    run(folder, "--combo", "deepcache", "--trials", "1", "--no-artifacts")
    return folder


@pytest.fixture(scope="module")
def page(studies) -> tuple[Path, str]:
    assert main(["report", "--studies", str(studies)]) == 0
    path = studies / "report.html"
    return path, path.read_text(encoding="utf-8")


# -- artifacts ---------------------------------------------------------------------------------


def test_run_uploads_sample_images_per_trial_and_baseline_per_study(studies):
    files = list((studies / "artifacts").iterdir())
    assert files
    storage = storage_of(studies)
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        baseline = sorted(m.filename for m in get_all_artifact_meta(study))
        assert baseline == ["baseline_image0.jpg", "baseline_image1.jpg"]
        evaluated = [t for t in study.trials if TrialRecord.from_trial(t).evaluated]
        assert evaluated
        for trial in evaluated:
            metas = get_all_artifact_meta(trial, storage=storage)
            assert sorted(m.filename for m in metas) == [
                f"trial{trial.number}_image0.jpg", f"trial{trial.number}_image1.jpg"]
            assert {m.mimetype for m in metas} == {"image/jpeg"}
            data = (studies / "artifacts" / metas[0].artifact_id).read_bytes()
            assert Image.open(io.BytesIO(data)).size == (128, 128)  # tiny-sd's native size


def test_no_artifacts_uploads_none(bare_studies):
    assert not (bare_studies / "artifacts").exists()
    storage = storage_of(bare_studies)
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert get_all_artifact_meta(study) == []
    assert all(get_all_artifact_meta(t, storage=storage) == [] for t in study.trials)


def test_artifact_folder_rules(tmp_path):
    assert artifacts.artifact_dir(studies="s", storage=None) == Path("s/artifacts")
    assert artifacts.artifact_dir(studies="s", storage="postgresql://h/db") is None
    assert artifacts.artifact_dir(studies="s", storage="postgresql://h/db",
                                  explicit="a") == Path("a")
    assert artifacts.artifact_dir(studies="s", storage=None, explicit="a", enabled=False) is None
    assert RunOptions(studies="x").artifact_dir == Path("x/artifacts")
    assert RunOptions(storage="sqlite:///x.db").artifact_dir is None
    assert RunOptions(storage="sqlite:///x.db", artifacts_dir="y").artifact_dir == Path("y")
    assert RunOptions(artifacts=False).artifact_dir is None


def test_encode_downscales_to_256():
    image = torch.randint(0, 256, (3, 600, 400), dtype=torch.uint8)
    picture = Image.open(io.BytesIO(artifacts.encode(image)))
    assert picture.format == "JPEG" and max(picture.size) == 256
    assert picture.size == (171, 256)


class _BrokenStore:
    def write(self, artifact_id, content):
        raise OSError(28, "No space left on device")


class _Evaluation:
    sample_images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)


def test_upload_failure_warns_once_and_never_stops_the_search(capsys):
    study = optuna.create_study()
    uploader = artifacts.SampleUploader(_BrokenStore(), torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    for _ in range(2):
        uploader(study.ask(), _Evaluation())
    err = capsys.readouterr().err
    assert err.count("tuner: warning: cannot store sample images") == 1
    assert "No space left on device" in err


# -- the report --------------------------------------------------------------------------------


def test_report_is_one_self_contained_page(studies, page, capsys):
    path, text = page
    assert sorted(p.name for p in studies.glob("*.html")) == ["report.html"]
    # the header: model, scheduler, steps, resolution, device, and the random-weights note
    for expected in ("tiny-sd", "DDIM", "3 steps", "128x128", "CPU (", "resolution", "device"):
        assert expected in text, expected
    assert RANDOM_WEIGHTS_NOTE in text
    # plotly inlined once; no network: no external scripts, stylesheets or images
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()[:200]) == 1
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=\"(https?:)?//", text)
    figures = text.count('class="plotly-graph-div"')
    assert figures == text.count("Plotly.newPlot(")
    # per combo: scatter and history, and importances or a note saying why there are none
    for combo in COMBOS:
        assert f"{combo}: speedup vs ssim loss" in text
        assert f"{combo}: optimisation history" in text
    assert figures >= 2 * len(COMBOS)
    assert "Pareto front (feasible)" in text and "loss budget 50.0%" in text
    assert "best feasible so far" in text
    assert text.count(": parameter importances (") + text.count('<p class="note wide">') \
        == len(COMBOS)
    # the chosen configuration per combo and overall: the numbers of the results file
    assert re.search(r"<td>overall: deepcache[^<]*</td>", text)
    chosen = json.loads((studies / "search_params.json").read_text())
    (slot,) = chosen["settings"].values()
    overall = next(iter(slot["answers"].values()))["chosen"]
    assert f"overall: {overall['combo']}" in text
    assert html.escape(speed_text(SpeedEstimate.from_dict(overall["speed"]))) in text
    assert f"{overall['baseline_latency']:.3f} s &rarr; {overall['latency']:.3f} s" in text
    # baseline and chosen images, inlined, and decodable, each with its prompt
    images = re.findall(r'<img [^>]*src="data:image/jpeg;base64,([^"]+)"', text)
    assert len(images) >= 2 * 2 * (len(COMBOS) + 1)  # 2 images each side, per combo + overall
    assert Image.open(io.BytesIO(base64.b64decode(images[0]))).size == (128, 128)
    assert "baseline #0" in text and f"chosen: {overall['combo']} #0" in text
    storage = storage_of(studies)
    prompts = StudyRecord.of(optuna.load_study(
        study_name=optuna.get_all_study_names(storage)[0], storage=storage)).prompts
    assert all(f'<p class="prompt">{html.escape(p)}</p>' in text for p in prompts)


def test_report_prints_where_it_wrote(studies, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", "--studies", str(studies), "--out", str(out)]) == 0
    assert out.is_file()
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (1 setting(s), 4 studies, ")
    # A folder: report.html in it.
    assert main(["report", "--studies", str(studies), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file()
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'report.html'} ")


def test_report_without_artifacts_says_so(bare_studies):
    assert main(["report", "--studies", str(bare_studies)]) == 0
    text = (bare_studies / "report.html").read_text(encoding="utf-8")
    assert "No sample images: these studies have no artifact store" in text
    assert not re.search(r'<img [^>]*src="data:', text)
    assert "Too few completed trials for parameter importances (1 distinct" in text


@pytest.mark.parametrize("args", [
    pytest.param(["--studies", "{tmp}/none"], id="no-folder"),
    pytest.param(["--studies", "{tmp}"], id="no-database"),
    pytest.param(["--storage", "sqlite:///{tmp}/missing.db"], id="storage-missing-file"),
    pytest.param(["--storage", "not a url"], id="storage-not-a-url"),
])
def test_report_missing_studies_is_one_line_exit_2(args, tmp_path, capsys):
    rc = main(["report", *[a.format(tmp=tmp_path) for a in args]])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert_one_line_error(err)
    assert not list(tmp_path.rglob("*"))  # nothing created


def test_report_of_empty_database_is_one_line_exit_2(tmp_path, capsys):
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'tuner.db'}", study_name="other")
    assert main(["report", "--studies", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "no tuner studies" in err and "1 other studies" in err


# -- figures on made-up trials: the requirement line, the importances note ----------------------


def _goal_group(values: list[tuple[float, float]], goal) -> report.GoalGroup:
    """A study of made-up trials, as the tuner records them, with its answer."""
    from tuner.answer import answer
    from tuner.record import QualityEstimate, SpeedEstimate
    from tuner.setting import Setting
    from tuner.stats import Interval

    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"deepcache.cache_interval": optuna.distributions.IntDistribution(2, 5)}
    for speedup, loss in values:
        trial = study.ask(dist)
        config = {"deepcache": {"cache_interval": trial.params["deepcache.cache_interval"]}}
        TrialRecord.write_claim(trial, config=config, canonical=str(trial.number),
                                worker={}, sampler_seed=None)
        interval = Interval(loss, loss, loss, 8)
        TrialRecord.write_result(
            trial, speed=SpeedEstimate(Interval(speedup, speedup, speedup, 4), 1.0, 4),
            quality=QualityEstimate("clip", interval, 30, interval, 30, 0.9, 8), pruned=None,
            seconds={}, goal=goal)
        study.tell(trial, [speedup, loss])
    setting = Setting(pipe="tiny-sd", scheduler="DDIM", steps=3, height=128, width=128)
    record = StudyRecord("s", setting, goal, "deepcache")
    trials = [TrialRecord.from_trial(t) for t in study.trials]
    combo = report.ComboStudy(study, record, trials, {t.number: t for t in study.trials})
    return report.GoalGroup(answer(setting, goal, [(record, trials)]), [combo])


def test_scatter_marks_budget_required_front_and_choice():
    from tuner.setting import Goal

    g = _goal_group([(1.5, 0.01), (2.0, 0.05), (1.2, 0.2), (1.8, 0.08), (1.1, 0.09)],
                    Goal(loss_budget=0.1, req_speedup=1.9))
    fig = report.scatter(g.combos[0], g)
    shapes = {(s.type, s.x0, s.x1, s.y0, s.y1) for s in fig.layout.shapes}
    assert ("line", 0.1, 0.1, 0, 1) in shapes  # vertical: the loss budget
    assert ("line", 0, 1, 1.9, 1.9) in shapes  # horizontal: the required speedup
    traces = {t.name: t for t in fig.data}
    assert list(traces["infeasible or stopped for its loss"].y) == [1.2]
    assert sorted(traces["Pareto front (feasible)"].y) == [1.5, 2.0]
    assert list(traces["chosen"].y) == [2.0]
    history = report.history(g.combos[0], g)
    best = next(t for t in history.data if t.name == "best feasible so far")
    assert list(best.y) == [1.5, 2.0, 2.0, 2.0, 2.0]


def test_importances_need_enough_trials():
    from tuner.setting import Goal

    note = report.importances(_goal_group([(1.5, 0.01), (2.0, 0.05)], Goal()).combos[0])
    assert isinstance(note, str) and note.startswith("Too few completed trials")


# -- in a real browser -------------------------------------------------------------------------

CAPTURE = """<script>
window.__errors = [];
function __keep(text) {
  window.__errors.push(String(text));
  document.documentElement.setAttribute("data-errors", JSON.stringify(window.__errors));
}
window.addEventListener("error", e => __keep("error: " + e.message));
window.addEventListener("unhandledrejection", e => __keep("rejection: " + e.reason));
const __error = console.error, __warn = console.warn;
console.error = (...a) => { __keep("console.error: " + a.join(" ")); __error(...a); };
console.warn = (...a) => { __keep("console.warn: " + a.join(" ")); __warn(...a); };
window.addEventListener("load", () =>
  document.documentElement.setAttribute("data-errors", JSON.stringify(window.__errors)));
</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is needed: make browser (make test installs it)"
    return path


def browse(page_path: Path, tmp_path: Path, *actions: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
         "--window-size=1200,2400", *actions, page_path.as_uri()],
        capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium_without_console_errors(page, tmp_path):
    path, text = page
    watched = tmp_path / "report.html"  # the same page, with a script that records errors
    watched.write_text(text.replace("<head>", "<head>" + CAPTURE, 1), encoding="utf-8")
    done = browse(watched, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line
               or "Uncaught" in line]
    assert console == []
    errors = re.search(r'<html[^>]*data-errors="([^"]*)"', dom)
    assert errors, "the page never finished loading"
    assert json.loads(errors.group(1).replace("&quot;", '"')) == []
    figures = text.count('class="plotly-graph-div"')
    assert figures >= 2 * len(COMBOS)
    for i in range(1, figures + 1):  # every figure drew its SVG
        start = dom.index(f'id="figure-{i}"')
        end = dom.find(f'id="figure-{i + 1}"', start)
        assert 'class="main-svg"' in dom[start:end if end >= 0 else len(dom)], f"figure-{i}"
    assert len(re.findall(r'<img [^>]*src="data:image/jpeg', dom)) >= 2


def test_report_screenshot_shows_the_page(page, tmp_path):
    path, _ = page
    shot = tmp_path / "report.png"
    done = browse(path, tmp_path, f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 1000  # text, tables, images and plots; not a blank page
    plot_blue = sum(n for n, c in colors if abs(c[0] - 31) < 12 and abs(c[1] - 119) < 12
                    and abs(c[2] - 180) < 12)
    assert plot_blue > 50  # the feasible markers / importance bars got drawn
