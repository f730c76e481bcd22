"""The application: from `RunOptions` to a loaded pipeline, an evaluator, the studies and the
answer. One layer above the search (tuner/search), which receives what is assembled here; the
command line and the benchmarks both build through `build`.

With several workers the launching process loads nothing: it starts one worker process per GPU
(each builds its own evaluator and measures its own baseline), follows their progress in the
storage, and writes the answer once they are done (the worker protocol: search/workers.py).

SIGTERM (Slurm, Kubernetes and systemd stop a run with it) does what Ctrl-C does: the running
trial is marked interrupted and re-queued, and `tuner run` exits with 143 (Ctrl-C: 130); a
launcher forwards it to its workers. Both are requests, acted on at checkpoints
(tuner/interrupts.py), never raised inside a library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import interrupts
from .answer import Answer, answer
from .interrupts import Terminated
from .options import RunOptions
from .presets import RANDOM_WEIGHTS_NOTE, is_preset
from .setting import Goal, Mode, Setting, prompts_id


@dataclass
class Session:
    """What a process works with: the loaded pipeline, its evaluator and its setting."""

    pipe: object
    evaluator: object  # tuner.evaluator.Evaluator
    setting: Setting
    prompts: list[str]
    threads: int | None  # torch's CPU threads (None on a GPU)


def prompt_pool(options: RunOptions) -> tuple[list[str], str]:
    """The prompts to draw from, and where they come from, in words."""
    from . import prompts
    from .presets import trained_prompts

    if options.prompts:
        return prompts.load_prompts(options.prompts), f"prompts file {options.prompts!r}"
    trained = trained_prompts(options.pipe)
    if trained:
        return trained, f"{options.pipe}'s captions"
    return list(prompts.BUILTIN_PROMPTS), "the built-in prompt list"


def choose_prompts(options: RunOptions) -> list[str]:
    from . import prompts

    pool, source = prompt_pool(options)
    return prompts.choose_prompts(pool, options.num_samples, options.seed, source=source)


def clip_model_name(options: RunOptions) -> str:
    from .metrics import default_clip_model

    return default_clip_model(options.pipe) if options.clip_model == "auto" \
        else options.clip_model


def setting_without_loading(options: RunOptions) -> Setting:
    """The setting the workers will build, known without loading the model."""
    from .pipelines import device_name, native_size_of, resolve_device

    return options.setting(native=native_size_of(options.pipe),
                           device=device_name(resolve_device(options.device)),
                           clip_model=clip_model_name(options),
                           prompts_id=prompts_id(choose_prompts(options)))


def configure_solver(options: RunOptions) -> None:
    """The values of the scheduler and step-count knobs this run searches, for this process
    (accelerators/solver.py; nothing when neither is searched)."""
    from .accelerators import solver

    if options.solver_space is not None:
        solver.configure(options.solver_space)


def build(options: RunOptions, *, say=lambda message: None, clock=None) -> Session:
    """Load the model and CLIP, choose the prompts (and on CPU the thread count), and make the
    evaluator; measures nothing yet."""
    import torch

    from . import metrics, pipelines
    from .evaluator import Evaluator
    from .families import family_of
    from .accelerators import without_steps
    from .messages import PipelineError

    chosen = choose_prompts(options)
    device = pipelines.resolve_device(options.device)
    moved = pipelines.resolve_model(options.pipe)[1]
    if moved and options.role.speaks:
        print(f"note: {moved}", file=sys.stderr)
    say(f"loading {options.pipe} on {device} ...")
    pipe = pipelines.load_pipeline(options.pipe, device=device)
    interrupts.checkpoint()  # loading has no others: a stop waits for each step to end
    family = family_of(pipe)
    try:
        family.check_size(height=options.height, width=options.width)
    except ValueError as err:
        raise PipelineError(str(err)) from None
    pipelines.set_scheduler(pipe, pipelines.family_scheduler(family, options.scheduler))
    configure_solver(options)
    foreign = [c for c in map(without_steps, options.combos) if c and c not in family.combos]
    if foreign:
        raise PipelineError(f"combo {foreign[0]} does not apply to {family.title} pipelines; "
                            f"choose from {', '.join(family.combos)}")
    clip = clip_model_name(options)
    setting = options.setting(native=pipelines.native_size(pipe),
                              device=pipelines.device_name(device), clip_model=clip,
                              prompts_id=prompts_id(chosen))
    scorer = metrics.load_clip_scorer(clip, device=device, dtype=pipelines.default_dtype(device))
    if options.role.speaks:
        from . import prompts

        pool, source = prompt_pool(options)
        for note in prompts.notes(pool, chosen, scorer.truncated(chosen), source=source,
                                  limit=metrics.TEXT_TOKENS):
            print(f"note: {note}", file=sys.stderr)
    interrupts.checkpoint()
    evaluator = Evaluator(pipe, setting, chosen, scorer, metric=options.goal.metric,
                          timing=options.timing, clock=clock)
    threads = None
    if device.type == "cpu":
        threads = options.threads or _measured_threads(evaluator, say)
        torch.set_num_threads(threads)
    return Session(pipe, evaluator, setting, chosen, threads)


def _measured_threads(evaluator, say) -> int:
    """The CPU thread count that keeps latency from collapsing on a busy machine (measured)."""
    import torch

    from .timing import choose_threads

    cores = os.cpu_count() or 1
    counts = sorted({1, *(c for c in (2, 4, 8, 16, 32) if c <= cores), cores})

    def time_one(count: int) -> float:
        torch.set_num_threads(count)
        return evaluator.time_plain_batch()

    best, seen = choose_threads(time_one, counts)
    say("CPU threads: " + ", ".join(f"{c}: slowest {max(t):.3f}s" for c, t in seen.items())
        + f" -> {best}")
    return best


def current_answer(storage, setting: Setting, goal: Goal, notes=(), *,
                   full_front: bool = False) -> Answer | None:
    """The answer for this setting and goal, from every combo's study of it."""
    from .accelerators import COMBOS
    from .search.studies import load_group

    group = load_group(storage, setting, goal, COMBOS, full_front=full_front)
    if not group:
        return None
    return answer(setting, goal, [(r, t) for _, r, t in group], notes)


def save_answer(storage, setting: Setting, options: RunOptions, notes=(),
                model: dict | None = None) -> Answer | None:
    from .search import results

    found = current_answer(storage, setting, options.goal, notes,
                           full_front=options.full_front)
    if found is not None:
        results.merge(options.output, found, model=model)
    return found


def _storage(options: RunOptions):
    from .search.studies import open_storage

    if options.storage is None:
        Path(options.studies).mkdir(parents=True, exist_ok=True)
    return open_storage(options.storage_url, heartbeat=options.heartbeat)


def _say(options: RunOptions):
    def say(message: str) -> None:
        if options.progress and options.role.speaks:
            print(message, file=sys.stderr)
    return say


DEGENERATE_CLIP = 5.0  # real models' images score 20-35 against their prompts


def _degenerate_clip(options: RunOptions, session: Session) -> str | None:
    score = session.evaluator.baseline.clip_score
    if options.goal.metric == "clip" and score < DEGENERATE_CLIP:
        return (f"the plain pipeline's images score {score:.2f} against their prompts with "
                f"{session.setting.clip_model} (real models score 20-35): CLIP losses mean "
                f"nothing here; --metric ssim measures fidelity instead")
    return None


def _notes(options: RunOptions, session: Session) -> list[str]:
    notes = [n for n in [_degenerate_clip(options, session)] if n]
    plain_runs = session.evaluator.plain_runs
    for note in (plain_runs.noise_note(), plain_runs.too_noisy()):
        if note:
            notes.append(note)
    if is_preset(options.pipe):
        notes.append(RANDOM_WEIGHTS_NOTE)
    return notes


def plan_of(options: RunOptions, session: Session):
    from .search.runner import SearchPlan

    return SearchPlan(combos=options.combos, trials=options.trials, sampler=options.sampler,
                      seed=options.seed, sampler_seed=options.sampler_seed,
                      patience=options.stop_after, full_front=options.full_front,
                      stop_when_met=options.stop_when_met, timeout=options.timeout,
                      progress=options.progress and options.role.speaks,
                      role=options.role, device=session.setting.device,
                      threads=session.threads)


def _already_answered(options: RunOptions, storage) -> Answer | None:
    """The stored answer, when the search has nothing left to do for these options: every
    combo's study finished by the runner's own rule (state.StudyState.finished, under the floor
    the combos before it set), every answer raced with all that could change it, and the
    overall race run on the combos' answers. A rerun then answers at once instead of loading
    the model and measuring a baseline; otherwise it resumes, and races what is unraced."""
    from .accelerators import COMBOS
    from .answer import baseline_latency
    from .record import ENDED
    from .search.progress import Progress
    from .search.studies import load_group
    from .state import StudyState, overall_entries

    try:
        setting = setting_without_loading(options)
    except Exception:  # configs not at hand: find out the long way
        return None
    goal = options.goal
    loaded = load_group(storage, setting, goal, COMBOS, full_front=options.full_front)
    group = {r.combo: (r, StudyState.from_record(r, t)) for _, r, t in loaded}
    floor = None
    for combo in options.combos:
        if combo not in group:
            return None
        record, state = group[combo]
        run_floor = None if options.full_front else floor
        if not state.finished(points=record.distinct_points or 0, trials=options.trials,
                              patience=options.stop_after,
                              stop_when_met=options.stop_when_met,
                              precision=options.timing_precision, floor=run_floor) \
                or not state.settled():
            return None
        if goal.mode == Mode.MAX_SPEEDUP and state.floor() is not None:
            floor = max(floor or 0.0, state.floor())
    states = [state for _, state in group.values()]
    required = goal.required_speedup(baseline_latency([r for r, _ in group.values()]))
    if overall_entries(states, goal, required):
        return None
    found = current_answer(storage, setting, goal, _stored_notes(options, setting),
                           full_front=options.full_front)
    if found is not None and found.chosen is not None and found.chosen.held_out is None:
        return None  # its loss is still to be measured on held-out images (heldout.py)
    # Nothing is left to do: this run is complete (one stopped just before saying so, too).
    Progress(options.combos, options.trials).enter(
        ENDED, studies=[study for study, r, _ in loaded if r.combo in options.combos])
    return current_answer(storage, setting, goal, _stored_notes(options, setting),
                          full_front=options.full_front)


def _stored_notes(options: RunOptions, setting: Setting) -> list[str]:
    """The notes the run that measured these studies wrote (the noise it saw, ...)."""
    from .search import results

    slot = results.read(options.output)["settings"].get(setting.key, {})
    earlier = slot.get("answers", {}).get(options.goal.key, {})
    notes = earlier.get("notes") or ([RANDOM_WEIGHTS_NOTE] if is_preset(options.pipe) else [])
    return list(notes)


def run(options: RunOptions) -> int:
    """`tuner run` in this process (alone, or as one of several workers: `options.role`)."""
    from .artifacts import uploader
    from .pipelines import model_record
    from .search import results
    from .search.runner import run_search
    from .search.studies import DB_NAME

    configure_solver(options)
    say, role = _say(options), options.role
    # A shared database is reached first: if it cannot be, say so before minutes of work.
    storage = _storage(options) if options.storage else None
    if role.writes_results and (storage or (Path(options.studies) / DB_NAME).is_file()):
        found = _already_answered(options, storage or _storage(options))
        if found is not None:
            say("nothing left to do for these options: the stored answer")
            results.merge(options.output, found)
            return _print_answer(options, found)
    session = build(options, say=say)
    say(f"measuring the plain pipeline ({session.setting.key}) ...")
    base = session.evaluator.measure_baseline()
    say(f"baseline: {base.latency.median:.3f}s per batch (spread {base.latency.spread:.0%}), "
        f"CLIP score {base.clip_score:.2f}")
    degenerate = _degenerate_clip(options, session)
    if degenerate and role.speaks:
        print(f"note: {degenerate}", file=sys.stderr)
    storage = storage or _storage(options)
    model = model_record(session.pipe)

    def on_answer() -> Answer | None:
        return save_answer(storage, session.setting, options, _notes(options, session), model)

    upload, said = uploader(options.artifact_dir, base.images), []

    def on_evaluation(trial, evaluation) -> None:
        if upload is not None:
            upload(trial, evaluation)
        line = session.evaluator.plain_runs.too_noisy()
        if line and not said and role.speaks:  # once, as soon as it shows
            said.append(line)
            print(f"note: {line}", file=sys.stderr)

    try:
        run_search(session.evaluator, storage, options.goal, plan_of(options, session),
                   prompts=session.prompts, on_evaluation=on_evaluation,
                   on_answer=on_answer if role.writes_results else None)
    except KeyboardInterrupt as stop:
        found = None
        if role.writes_results:
            with contextlib.suppress(Exception):  # what is known so far is not lost
                found = on_answer()
        if role.speaks:
            _print_resume(options, found.status if found is not None else None,
                          word=stop.word if isinstance(stop, Terminated) else "interrupted")
        return 130
    if not role.writes_results:
        return 0
    found = save_answer(storage, session.setting, options, _notes(options, session), model)
    return _print_answer(options, found)


def _print_answer(options: RunOptions, found: Answer | None) -> int:
    if found is None:
        print("no studies were run", file=sys.stderr)
        return 1
    print(found.table())
    print(f"\nwrote {options.output}; studies in {_shown_url(options)}")
    return 0


def _shown_url(options: RunOptions) -> str:
    """The storage URL without its password (search/urls.py)."""
    from .search.urls import masked

    return masked(options.storage_url)


def _print_resume(options: RunOptions, status=None, *, word: str = "interrupted") -> None:
    """What was stopped (status.Status.stop_text, where the studies say it) and how to
    resume."""
    from .search.urls import scrubbed
    from .status import INTERRUPTED

    command = options.resume_command()
    shown = scrubbed(command, options.storage) if options.storage else command
    again = "" if shown == command else \
        "\n(with the storage URL's password, or with it in PGPASSWORD or ~/.pgpass)"
    what = status.stop_text() if status is not None and status.state == INTERRUPTED \
        else f"{word}: what was measured is kept."
    print(f"\n{what}\nResume with:\n  {shown}{again}", file=sys.stderr)


# -- several workers ---------------------------------------------------------------------------


def worker_devices(options: RunOptions) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker (None: leave the environment as it is)."""
    import torch

    from .pipelines import PipelineError, resolve_device

    device = resolve_device(options.device)
    if device.type != "cuda":
        return [None] * options.workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    if options.workers > len(ids):
        raise PipelineError(f"--workers {options.workers} needs as many GPUs; "
                            f"{len(ids)} visible")
    return ids[:options.workers]


def run_workers(options: RunOptions) -> int:
    """Start one worker per GPU on the shared studies; wait; answer."""
    devices = worker_devices(options)
    setting = setting_without_loading(options)
    storage = _storage(options)  # created here once, so workers don't race to create tables
    threads = str(max(1, (os.cpu_count() or 1) // options.workers))
    procs = []
    for index, device in enumerate(devices):
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", threads)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        # Their own session: a Ctrl-C reaches them once, forwarded by this process (as is a
        # SIGTERM, which Kubernetes sends to this process only).
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tuner", *options.argv, "--worker", str(index)], env=env,
            start_new_session=True))
    _say(options)(f"started {len(procs)} workers on {_shown_url(options)}")
    try:
        _follow(options, storage, setting, procs)
    except BaseException as err:  # Ctrl-C, SIGTERM, anything else: the workers stop cleanly too
        stop = err.signum if isinstance(err, Terminated) else signal.SIGINT
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(stop)
        for proc in procs:
            proc.wait()
        if isinstance(err, KeyboardInterrupt):
            found = None
            with contextlib.suppress(Exception):  # the workers marked where they stopped
                found = current_answer(storage, setting, options.goal,
                                       full_front=options.full_front)
            _print_resume(options, found.status if found is not None else None,
                          word=err.word if isinstance(err, Terminated) else "interrupted")
            return 130
        raise
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed:
        print(f"tuner: error: {len(failed)} of {len(procs)} workers failed "
              f"(exit codes {failed}); rerun to resume", file=sys.stderr)
        return 1
    return _print_answer(options, save_answer(storage, setting, options))


def _follow(options: RunOptions, storage, setting: Setting, procs) -> None:
    """A progress bar over all combos' evaluations, read from the storage."""
    import optuna
    from tqdm.auto import tqdm

    from .record import trial_records
    from .search.studies import study_name

    total = options.trials * len(options.combos)
    studies: dict[str, optuna.Study] = {}
    with tqdm(total=total, unit="eval", file=sys.stderr, disable=not options.progress,
              dynamic_ncols=True) as bar:
        while any(p.poll() is None for p in procs):
            for combo in options.combos:
                if combo not in studies:
                    name = study_name(setting, combo, options.goal,
                                      full_front=options.full_front)
                    with contextlib.suppress(KeyError):  # the workers have not made it yet
                        studies[combo] = optuna.load_study(study_name=name, storage=storage)
            bar.n = sum(min(sum(r.evaluated for r in trial_records(s)), options.trials)
                        for s in studies.values())
            bar.refresh()
            interrupts.sleep(1.0)


def launch(options: RunOptions) -> int:
    """`tuner run`: this process alone, or a launcher of workers. Ctrl-C and SIGTERM stop it at
    the next checkpoint (tuner/interrupts.py); its exit code is then 130 or 143."""
    configure_solver(options)
    try:
        with interrupts.deferred() as request:
            rc = run(options) if options.role.searches else run_workers(options)
    except Terminated as stop:  # outside a trial: loading, measuring the baseline, the end
        print(f"\ntuner: {stop.word}", file=sys.stderr)
        return stop.exit_code
    return request.exit_code(rc)


__all__ = ["Session", "build", "configure_solver", "current_answer", "launch", "run", "save_answer"]
