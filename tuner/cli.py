"""Command line: `tuner run`, `tuner show` (and the report and dashboard commands)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_STUDIES = "studies"
DEFAULT_OUTPUT = "search_params.json"


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .accelerators import COMBOS
    from .evaluator import LOSS_METRICS
    from .search.space import SAMPLERS

    parser = _Parser(prog="tuner", description="Find the fastest DeepCache / ToMe / T-GATE "
                     "settings of a Stable Diffusion pipeline within an image-quality budget.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="search: one Optuna study per combo (resumable)")
    run.add_argument("--pipe", default="SD1.5", help="SD1.5, SD2.1, SDXL, a hub id, a local "
                     "path, or a random-weight preset (tiny-sd, tiny-sdxl, sd1.5-random, ...)")
    run.add_argument("--sched", default="DDIM", help="DDIM, DPM-Solver++ or UniPC")
    run.add_argument("--steps", type=_positive_int, default=50)
    run.add_argument("--batch-size", "--batch_size", dest="batch_size", type=_positive_int,
                     default=4)
    run.add_argument("--num-samples", "--num_samples", dest="num_samples", type=_positive_int,
                     default=32, help="prompts (and images) scored per configuration")
    run.add_argument("--seed", type=int, default=42)
    goal = run.add_mutually_exclusive_group()
    goal.add_argument("--req-time", "--req_time", dest="req_time", type=_float,
                      help="required latency of one batch, seconds")
    goal.add_argument("--req-speedup", "--req_speedup", dest="req_speedup", type=_float,
                      help="required speedup over the plain pipeline")
    run.add_argument("--req-score-loss", "--req_score_loss", dest="req_score_loss", type=_float,
                     default=0.02, help="loss budget, relative (0.02 = 2%%)")
    run.add_argument("--stop-when-met", action="store_true",
                     help="with a requirement: stop a combo's study once a trial meets it")
    run.add_argument("--combo", default="all", choices=[*COMBOS, "all"])
    run.add_argument("--trials", type=_positive_int, default=200, help="per combo")
    run.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    run.add_argument("--studies", default=DEFAULT_STUDIES, help="folder of the study database")
    run.add_argument("--storage", help="an Optuna storage URL shared by several hosts (e.g. "
                     "postgresql://...), instead of the SQLite database in --studies")
    run.add_argument("--workers", type=_positive_int, default=1,
                     help="worker processes on the shared studies, one per visible GPU")
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # index of a started worker
    run.add_argument("--output", default=DEFAULT_OUTPUT)
    run.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    run.add_argument("--metric", default="clip", choices=LOSS_METRICS,
                     help="clip: relative CLIP-score loss; ssim: 1 - SSIM to the plain images")
    run.add_argument("--clip-model", default="auto", help="CLIP model for scoring (default: "
                     "openai/clip-vit-large-patch14; a random-weight one for presets)")
    run.add_argument("--prompts", help="captions: COCO annotations JSON, MLPerf TSV or one "
                     "prompt per line (default: the built-in list)")
    run.add_argument("--height", type=_positive_int)
    run.add_argument("--width", type=_positive_int)
    run.add_argument("--timing-pairs", type=_positive_int, default=4,
                     help="interleaved plain/accelerated timed runs per trial")
    run.add_argument("--heartbeat", type=_positive_int, default=10, help="seconds; a trial "
                     "whose worker is silent for 3 beats is re-run")
    run.add_argument("--no-progress", dest="progress", action="store_false")
    run.add_argument("--no-artifacts", dest="artifacts", action="store_false",
                     help="store no sample images (default: each evaluated trial's first images "
                     "and the baseline's, as Optuna artifacts in <studies>/artifacts)")
    run.add_argument("--artifacts", dest="artifacts_dir", metavar="DIR",
                     help="artifact folder for the sample images (default <studies>/artifacts; "
                     "with --storage, none unless given)")

    show = commands.add_parser("show", help="print the chosen settings")
    show.add_argument("--output", default=DEFAULT_OUTPUT)

    from .dashboard import DEFAULT_HOST, DEFAULT_PORT

    dashboard = commands.add_parser("dashboard", help="optuna-dashboard on the studies and "
                                    "their sample images")
    report = commands.add_parser("report", help="write one self-contained HTML report of the "
                                 "studies")
    for sub in (dashboard, report):
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--studies", default=DEFAULT_STUDIES,
                           help="folder of the study database")
        where.add_argument("--storage", help="an Optuna storage URL instead of --studies")
        sub.add_argument("--artifacts", metavar="DIR", help="artifact folder of the sample "
                         "images (default <studies>/artifacts)")
    dashboard.add_argument("--host", default=DEFAULT_HOST)
    dashboard.add_argument("--port", type=_positive_int, default=DEFAULT_PORT)
    report.add_argument("--out", help="the HTML file (default <studies>/report.html)")
    return parser


def _check_run_args(args) -> None:
    """Everything that can be checked before anything is loaded or written."""
    from .accelerators import COMBOS, grid_size
    from .pipelines import check_pipe_name, scheduler_name
    from .search import results
    from .search.studies import DB_NAME, check_storage_url

    if args.req_speedup is not None and args.req_speedup <= 1:
        raise UsageError(f"--req-speedup must be greater than 1, got {args.req_speedup:g}")
    if args.req_time is not None and args.req_time <= 0:
        raise UsageError(f"--req-time must be greater than 0 seconds, got {args.req_time:g}")
    if not 0 < args.req_score_loss < 1:
        raise UsageError(f"--req-score-loss must be between 0 and 1 (relative), "
                         f"got {args.req_score_loss:g}")
    if args.num_samples < args.batch_size:
        raise UsageError(f"--num-samples ({args.num_samples}) must be at least --batch-size "
                         f"({args.batch_size}): latency is measured on full batches")
    args.sched = scheduler_name(args.sched)
    check_pipe_name(args.pipe)
    args.combos = list(COMBOS) if args.combo == "all" else [args.combo]
    if args.sampler == "grid":
        too_large = [f"{c} has {grid_size(c):,} points" for c in args.combos
                     if grid_size(c) > args.trials]
        if too_large:
            raise UsageError(f"--sampler grid needs --trials at least the grid size: "
                             f"{'; '.join(too_large)} (--trials {args.trials})")
    _check_writable("--output", Path(args.output).parent)
    if args.storage is not None:
        try:
            check_storage_url(args.storage)
        except ValueError as err:
            raise UsageError(str(err)) from None
        results.read(args.output)
        return
    studies = Path(args.studies)
    if studies.exists() and not studies.is_dir():
        raise UsageError(f"--studies {args.studies!r} is not a folder")
    _check_writable("--studies", studies)
    _check_database(studies / DB_NAME)
    results.read(args.output)  # an unreadable results file stops us before any work


def _check_database(path: Path) -> None:
    """An existing studies database must be readable: found now, not after the baseline."""
    if not path.exists():
        return
    import contextlib
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as err:
        raise UsageError(f"studies database {str(path)!r} is unreadable or corrupt "
                         f"({err}); move it away or pass another --studies") from None
    if tables and "studies" not in tables:
        raise UsageError(f"{str(path)!r} is an SQLite database but not an Optuna study "
                         f"database; move it away or pass another --studies")


def _check_writable(flag: str, folder: Path) -> None:
    """`folder` exists as a writable folder, or can be created as one."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{flag}: folder {str(existing)!r} is not writable")


def _quiet_libraries() -> None:
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def cmd_run(args, argv) -> int:
    _check_run_args(args)
    from .search.launch import RunConfig, launch
    from .search.studies import Goal

    _quiet_libraries()
    goal = Goal(args.req_score_loss, args.metric, args.req_speedup, args.req_time)
    config = RunConfig(
        pipe=args.pipe, sched=args.sched, steps=args.steps, batch_size=args.batch_size,
        num_samples=args.num_samples, seed=args.seed, goal=goal, combos=tuple(args.combos),
        trials=args.trials, sampler=args.sampler, studies=args.studies, storage=args.storage,
        output=args.output, device=args.device, clip_model=args.clip_model,
        prompts=args.prompts, height=args.height, width=args.width,
        timing_pairs=args.timing_pairs, heartbeat=args.heartbeat,
        stop_when_met=args.stop_when_met, progress=args.progress, workers=args.workers,
        worker=args.worker, argv=tuple(argv), artifacts=args.artifacts,
        artifacts_dir=args.artifacts_dir)
    return launch(config)


def cmd_dashboard(args) -> int:
    from .dashboard import locate, serve

    found = locate(None if args.storage else args.studies, args.storage, args.artifacts)
    return serve(found, host=args.host, port=args.port)


def cmd_report(args) -> int:
    import optuna

    from .dashboard import locate
    from .report import write_report

    found = locate(None if args.storage else args.studies, args.storage, args.artifacts)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    written = write_report(found, args.out)
    print(f"wrote {written.path} ({written.settings} setting(s), {written.studies} studies, "
          f"{written.figures} plots)")
    return 0


def cmd_show(args) -> int:
    from .search import results

    data = results.read(args.output)
    if not data["settings"]:
        raise UsageError(f"no results in {args.output!r}; run `tuner run` first")
    for key, slot in data["settings"].items():
        print(key)
        for mode in ("max_speedup", "req_speedup"):
            if mode not in slot:
                continue
            entry = slot[mode]
            chosen = entry["chosen"]
            goal = entry["goal"]
            head = f"  {mode} ({goal['metric']} loss <= {goal['loss_budget']:.1%}"
            if entry["required_speedup"]:
                head += f", required {entry['required_speedup']:.2f}x, " \
                        f"{'met' if entry['met'] else 'NOT met'}"
            print(head + "):")
            if chosen is None:
                print("    no feasible configuration")
                continue
            print(f"    {chosen['combo']}: {chosen['speedup']:.2f}x, loss {chosen['loss']:.2%}, "
                  f"{chosen['baseline_latency']:.3f}s -> {chosen['latency']:.3f}s per batch")
            for name, params in chosen["params"].items():
                print(f"      {name}: {params}")
    return 0


def main(argv=None) -> int:
    from .accelerators import AcceleratorError
    from .pipelines import PipelineError
    from .prompts import PromptsError
    from .search.results import ResultsError
    from .search.studies import StudiesError

    try:
        args = build_parser().parse_args(argv)
        argv = list(sys.argv[1:] if argv is None else argv)
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "dashboard":
            return cmd_dashboard(args)
        if args.command == "report":
            return cmd_report(args)
        return cmd_show(args)
    except (UsageError, PipelineError, PromptsError, ResultsError, AcceleratorError,
            StudiesError) as err:
        print(f"tuner: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ntuner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
