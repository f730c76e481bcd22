"""Command line: `tuner run`, `tuner show`, `tuner report`, `tuner dashboard`.

Thin: it parses, checks what can be checked before anything is loaded, and hands a `RunOptions`
to tuner.app. Reading results (`show`, `report`) never imports torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from .options import RunOptions

DEFAULT_STUDIES = RunOptions.default("studies")
DEFAULT_OUTPUT = RunOptions.default("output")


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False, True, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _whole_number(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _seconds(text: str) -> float:
    value = _float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be seconds greater than 0, got {text!r}")
    return value


def _flag(group, name: str, **kwargs):
    """`--some-flag` with its `--some_flag` spelling; dest and default from RunOptions."""
    dest = kwargs.pop("dest", name.replace("-", "_"))
    spellings = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    if "action" not in kwargs or kwargs["action"] not in ("store_true", "store_false"):
        kwargs.setdefault("default", RunOptions.default(dest))
    return group.add_argument(*spellings, dest=dest, **kwargs)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tuner")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from .accelerators import COMBOS, without_steps
    from .search.space import SAMPLERS
    from .setting import LOSS_BOUNDS, LOSS_METRICS

    parser = _Parser(prog="tuner", description="Find the fastest DeepCache / ToMe / T-GATE "
                     "settings of a Stable Diffusion pipeline within an image-quality budget.")
    parser.add_argument("--version", action="version", version=f"tuner {_version()}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    run = commands.add_parser("run", formatter_class=_Help,
                              help="search: one Optuna study per combo (resumable)")
    model = run.add_argument_group("model and generation")
    _flag(model, "pipe", help="SD1.5, SD2.1, SDXL, a hub id, a local folder, a single-file "
          "checkpoint, or a preset: tiny-shapes, tiny-shapes-dit (trained toys), "
          "sd1.5-random, sdxl-random, flux-random, sd3.5-random, ... (random weights); "
          "`tuner models` lists them all")
    _flag(model, "sched", help="DDIM, DPM-Solver++, UniPC or FlowMatchEuler (auto: the "
          "model's own kind, DDIM for SD and SDXL, FlowMatchEuler for FLUX.1 and SD3)")
    _flag(model, "steps", type=_positive_int, help="denoising steps")
    _flag(model, "batch-size", type=_positive_int, help="images per pipeline call")
    _flag(model, "num-samples", type=_positive_int,
          help="prompts (and images) scored per configuration")
    _flag(model, "seed", type=int, help="the images' seeds are seed, seed+1, ...")
    _flag(model, "height", type=_positive_int, help="pixels (default: the model's native size)")
    _flag(model, "width", type=_positive_int, help="pixels (default: the model's native size)")
    _flag(model, "prompts", help="captions: COCO annotations JSON, MLPerf TSV or one prompt "
          "per line (default: the built-in COCO-style list; tiny-shapes: its own captions)")
    _flag(model, "device", choices=["auto", "cuda", "cpu"], help="where the pipeline runs")
    _flag(model, "threads", type=_positive_int,
          help="torch CPU threads (default on CPU: measured, the count a busy machine slows "
          "least)")

    goal = run.add_argument_group("goal")
    _flag(goal, "req-score-loss", dest="loss_budget", type=_float,
          help="loss budget, relative (0.02 = 2%%)")
    _flag(goal, "metric", choices=LOSS_METRICS,
          help="clip: relative CLIP-score loss; ssim: 1 - SSIM to the plain images")
    _flag(goal, "loss-bound", choices=LOSS_BOUNDS, help="feasible when the loss estimate "
          "(estimate) or the upper end of its 95%% interval (upper) is within the budget")
    _flag(goal, "clip-model", help="CLIP model for scoring (auto: "
          "openai/clip-vit-large-patch14; for presets, the preset's CLIP)")
    required = goal.add_mutually_exclusive_group()
    _flag(required, "req-time", type=_float, help="required latency of one batch, seconds")
    _flag(required, "req-speedup", type=_float, help="required speedup over the plain pipeline")

    search = run.add_argument_group("search")
    _flag(search, "combo", choices=[*(c for c in COMBOS if without_steps(c) in (c, None)), "all"],
          help="one study per combo (steps: the scheduler and step count alone, with "
          "--search-sched/--search-steps)")
    _flag(search, "search-sched", metavar="LIST", help="also search the scheduler: all (DDIM, "
          "DPM-Solver++, UniPC; FlowMatchEuler for FLUX.1 and SD3) or a comma list; the "
          "baseline stays --sched")
    _flag(search, "search-steps", metavar="LO-HI", help="also search the step count: a range "
          "LO-HI, or auto (about a quarter of --steps up to --steps); the baseline stays "
          "--steps")
    _flag(search, "trials", type=_positive_int, help="evaluations per combo (repeats are free)")
    _flag(search, "sampler", choices=SAMPLERS, help="how configurations are proposed")
    _flag(search, "sampler-seed", type=int,
          help="fix the sampler's stream (default: one of this process's own, recorded); "
          "with --workers, each worker's stream is derived from it; with --sampler grid, the "
          "order in which the grid is visited (it is shuffled)")
    _flag(search, "patience", type=_whole_number, help="stop a combo's study after this many "
          "evaluations without a better answer (0: never; the grid sampler never does)")
    _flag(search, "full-front", action="store_true", help="evaluate every configuration "
          "fully (no pruning) and search speedup and loss as two objectives, for the whole "
          "Pareto front (a study of its own)")
    _flag(search, "stop-when-met", action="store_true",
          help="with a requirement: stop a combo's study once a trial meets it")
    _flag(search, "timeout", type=_seconds, metavar="SECONDS", help="once the run has searched "
          "this long, start no new trial: the running one finishes, then the races and the "
          "answer as usual (combos not reached by then are not searched)")

    timing = run.add_argument_group("timing")
    _flag(timing, "timing-pairs", type=_positive_int,
          help="bracketed plain/accelerated pairs per configuration, at least")
    _flag(timing, "max-timing-pairs", type=_positive_int, help="... and at most")
    _flag(timing, "timing-precision", type=_float,
          help="an answer's speedup is measured until its 95%% interval is within +-this")
    _flag(timing, "screening-precision", type=_float,
          help="... and each configuration during the search until within +-this")
    _flag(timing, "judge-whole", dest="judge_steps", action="store_false",
          help="judge each timed run whole (default on a GPU: step by step, a neighbour's "
          "burst over some steps taken at the neighbouring runs' value; on a CPU: whole)")

    where = run.add_argument_group("where results go")
    _flag(where, "studies", help="folder of the study database")
    _flag(where, "storage", help="an Optuna storage URL shared by several hosts (e.g. "
          "postgresql://...), instead of the SQLite database in --studies")
    _flag(where, "output", help="the results file (tuner.accelerate reads it)")
    _flag(where, "no-artifacts", dest="artifacts", action="store_false",
          help="store no sample images (default: each evaluated trial's first images and "
          "the baseline's, as Optuna artifacts in <studies>/artifacts)")
    _flag(where, "artifacts", dest="artifacts_dir", metavar="DIR",
          help="artifact folder for the sample images (default <studies>/artifacts; with "
          "--storage, none unless given)")

    processes = run.add_argument_group("processes")
    _flag(processes, "workers", type=_positive_int,
          help="worker processes on the shared studies, one per visible GPU")
    processes.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    _flag(processes, "heartbeat", type=_positive_int,
          help="seconds; a trial whose worker is silent for 3 beats is re-run")
    _flag(processes, "no-progress", dest="progress", action="store_false",
          help="print no progress: neither the run's own lines and bars nor the libraries' "
          "loading bars (the answer and errors still)")

    commands.add_parser("models", formatter_class=_Help,
                        help="list the models --pipe accepts, their families and combos")

    show = commands.add_parser("show", formatter_class=_Help, help="print the chosen settings")
    show.add_argument("--output", default=DEFAULT_OUTPUT, help="the results file")
    show.add_argument("--studies", default=DEFAULT_STUDIES, help="where to look when the "
                      "results file has no answer yet (a run still going)")

    from .dashboard import DEFAULT_HOST, DEFAULT_PORT

    dashboard = commands.add_parser("dashboard", formatter_class=_Help,
                                    help="optuna-dashboard on the studies and their sample "
                                    "images")
    report = commands.add_parser("report", formatter_class=_Help,
                                 help="write one self-contained HTML report of the studies")
    for sub in (dashboard, report):
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--studies", default=DEFAULT_STUDIES,
                           help="folder of the study database")
        where.add_argument("--storage", help="an Optuna storage URL instead of --studies")
        sub.add_argument("--artifacts", metavar="DIR", help="artifact folder of the sample "
                         "images (default <studies>/artifacts)")
    dashboard.add_argument("--host", default=DEFAULT_HOST, help="the address to serve on; "
                           "one that is not loopback needs --allow-remote")
    dashboard.add_argument("--allow-remote", action="store_true",
                           help="serve on a non-loopback --host although optuna-dashboard has "
                           "no authentication (anyone reaching it can delete studies)")
    dashboard.add_argument("--port", type=_positive_int, default=DEFAULT_PORT,
                           help="the port to serve on")
    report.add_argument("--out", help="the HTML file, or a folder for report.html in it "
                        "(default <studies>/report.html)")
    return parser


def _check_family(args) -> None:
    """The size, the scheduler and the combos against the model's family, when it is known
    without loading (a preset, a known hub id, a folder or hub id whose configs can be read);
    the size against every family's rule otherwise."""
    from .families.base import check_size
    from .messages import PipelineError
    from .options import RunOptions
    from .pipelines import family_named, family_scheduler

    family = family_named(args.pipe)
    try:
        (family.check_size if family else check_size)(height=args.height, width=args.width)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    if family is None:
        return
    try:
        family_scheduler(family, args.sched)
    except PipelineError as err:
        raise UsageError(str(err)) from None
    combos = RunOptions(pipe=args.pipe, combo=args.combo).combos
    combos = () if combos == ("steps",) else combos  # the scheduler and steps alone: any family
    foreign = [c for c in combos if c not in family.combos]
    if foreign or (not combos and args.combo != "steps"):
        found = f"combo {foreign[0]} does not apply" if foreign else "no combo applies yet"
        choose = f"; choose from {', '.join(family.combos)} or all" if family.combos else \
            " (`tuner models` lists each model's)"
        raise UsageError(f"{found} to {family.title} pipelines ({args.pipe}){choose}")


def _check_run_args(args) -> None:
    """Everything that can be checked before anything is loaded or written."""
    from .accelerators import grid_size
    from .pipelines import check_pipe_name, scheduler_name
    from .search import results
    from .search.roles import Launcher, role_of
    from .search.studies import DB_NAME, check_database, check_storage_url, sqlite_path

    if args.req_speedup is not None and args.req_speedup <= 1:
        raise UsageError(f"--req-speedup must be greater than 1, got {args.req_speedup:g}")
    if args.req_time is not None and args.req_time <= 0:
        raise UsageError(f"--req-time must be greater than 0 seconds, got {args.req_time:g}")
    if not 0 < args.loss_budget < 1:
        raise UsageError(f"--req-score-loss must be between 0 and 1 (relative), "
                         f"got {args.loss_budget:g}")
    for flag in ("timing_precision", "screening_precision"):
        if not 0 < getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be between 0 and 1 (relative), "
                             f"got {getattr(args, flag):g}")
    if args.num_samples < args.batch_size:
        raise UsageError(f"--num-samples ({args.num_samples}) must be at least --batch-size "
                         f"({args.batch_size}): latency is measured on full batches")
    launcher = isinstance(role_of(workers=args.workers, worker=args.worker), Launcher)
    if launcher and args.device != "cuda":
        import torch

        if args.device == "cpu" or not torch.cuda.is_available():
            raise UsageError(f"--workers {args.workers} needs a GPU per worker: workers sharing "
                             f"the CPU would time each other; run one process on the CPU")
    args.sched = scheduler_name(args.sched)
    check_pipe_name(args.pipe)
    _check_family(args)
    _check_solver_space(args)
    if args.sampler == "grid":
        combos = RunOptions.from_args(args).combos
        device = args.device
        if device == "auto":  # the grid gains knobs on CUDA (accelerators.members)
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        sizes = {c: grid_size(c, device=device) for c in combos}
        too_large = [f"{c} has {sizes[c]:,} points" for c in combos if sizes[c] > args.trials]
        if too_large:
            raise UsageError(f"--sampler grid needs --trials at least the grid size: "
                             f"{'; '.join(too_large)} (--trials {args.trials})")
    _check_writable("--output", Path(args.output).parent)
    if args.storage is not None:
        try:
            check_storage_url(args.storage)
        except ValueError as err:
            raise UsageError(str(err)) from None
        database = sqlite_path(args.storage)
        if database is not None:
            check_database(database, flag="--storage")
        results.read(args.output)
        return
    studies = Path(args.studies)
    if studies.exists() and not studies.is_dir():
        raise UsageError(f"--studies {args.studies!r} is not a folder")
    _check_writable("--studies", studies)
    check_database(studies / DB_NAME)
    results.read(args.output)  # an unusable results file stops us before any work


def _check_solver_space(args) -> None:
    """--search-sched and --search-steps, resolved into the values the run searches (set for
    this process: accelerators/solver.py), or refused in one line."""
    from .accelerators import solver

    options = RunOptions.from_args(args)
    if args.combo == "steps" and not options.searches_solver:
        raise UsageError("--combo steps searches the scheduler and step count: pass "
                         "--search-sched and/or --search-steps")
    try:
        space = options.solver_space
    except ValueError as err:
        raise UsageError(str(err)) from None
    if space is not None:
        solver.configure(space)


def _check_writable(flag: str, folder: Path) -> None:
    """`folder` exists as a writable folder, or can be created as one."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{flag}: folder {str(existing)!r} is not writable")


def quiet_libraries(*, progress: bool = True) -> None:
    """Libraries' logs down to errors; with `progress` off, their progress bars too (the
    "Loading pipeline components" and "Loading weights" bars of diffusers, transformers and
    huggingface_hub), so that --no-progress leaves only the run's answer and its errors."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    if not progress:
        from huggingface_hub.utils import disable_progress_bars

        dlogging.disable_progress_bar()
        tlogging.disable_progress_bar()
        disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def cmd_run(args, argv) -> int:
    _check_run_args(args)
    from .app import launch

    options = RunOptions.from_args(args, argv)
    quiet_libraries(progress=args.progress and options.role.speaks)
    return launch(options)


def cmd_models(args) -> int:
    from .models import catalogue, render

    print(render(catalogue()))
    return 0


def cmd_dashboard(args) -> int:
    from .dashboard import is_loopback, remote_refusal, remote_warning, serve
    from .search.studies import locate

    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        raise UsageError(remote_refusal(args.host))
    found = locate(None if args.storage else args.studies, args.storage, args.artifacts)
    if remote:
        print(remote_warning(args.host, args.port), file=sys.stderr, flush=True)
    return serve(found, host=args.host, port=args.port)


def cmd_report(args) -> int:
    import optuna

    from .report import write_report
    from .search.studies import locate

    found = locate(None if args.storage else args.studies, args.storage, args.artifacts)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    written = write_report(found, args.out)
    print(f"wrote {written.path} ({written.settings} setting(s), {written.studies} studies, "
          f"{written.figures} plots)")
    return 0


def cmd_show(args) -> int:
    from .search import results

    data = results.read(args.output)
    found = list(results.answers(data))
    if not found:
        return _show_from_studies(args)
    # A file keeps what was true when written: a run it says is going may have ended since.
    _print_answers([(key, replace(a, status=a.status.rechecked()) if a.status else a)
                    for key, a in found])
    return 0


def _print_answers(found, *, after_text: bool = False) -> None:
    """(setting key, Answer) pairs, each under its setting and goal, blank lines between."""
    for i, (key, answer) in enumerate(found):
        print(("\n" if i or after_text else "") + f"{key}\n{answer.goal.key}:")
        print("  " + answer.table().replace("\n", "\n  "))


def _show_from_studies(args) -> int:
    """No answer in the file yet (a run still going): answer from the studies, saying so."""
    from .report import gather
    from .search.studies import DB_NAME, locate

    groups = []
    if (Path(args.studies) / DB_NAME).exists():  # a foreign or broken one is said so (locate)
        groups, _ = gather(locate(args.studies).storage())
    if not groups:
        raise UsageError(f"no results in {args.output!r}; run `tuner run` first")
    print(f"no answer in {args.output!r} yet; from the studies in {args.studies!r} "
          f"(a run still going confirms its answers as each study ends):")
    _print_answers([(a.setting.key, a) for group in groups for a in group.answers],
                   after_text=True)
    return 0


def main(argv=None) -> int:
    from .accelerators import AcceleratorError
    from .messages import PipelineError
    from .prompts import PromptsError
    from .search.results import ResultsError
    from .search.studies import StudiesError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        argv = list(sys.argv[1:] if argv is None else argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "dashboard":
            return cmd_dashboard(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "models":
            return cmd_models(args)
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
