"""What the stopping rule with confirmed progress (runner.unconfirmed_progress: a new best
postpones the stop only once its race confirms it) would have done in the H200 run
`cost-floor/`, read from its records: each study's evaluations are replayed in their recorded
order through the runner's own `finished` and `unconfirmed_progress`. Where the rule races,
each candidate's confirmed speed is the one the study's final race measured for it; a
candidate that never raced keeps its own estimate (said in the output).

It replays the rules of commit 9ca941e, whose `tuner.search.runner` it imports (they live in
`tuner.state.StudyState` since, with races that also record which trials they judged); that
commit also holds the records uncompressed and this script as it was. Its output,
`confirmed-progress.txt`, comes back byte for byte from a checkout of it:

    git worktree add /tmp/at-9ca941e 9ca941e && cd /tmp/at-9ca941e
    python benchmarks/results/2026-12-02-h200-combo-all/confirmed-progress.py
"""

import sys
from pathlib import Path

sys.path[:0] = [".", "benchmarks"]

import optuna  # noqa: E402

from tuner.answer import candidates, choose, feasible, speed_of  # noqa: E402
from tuner.record import Confirmation, StudyRecord, trial_records  # noqa: E402
from tuner.search.runner import finished, floor_of, unconfirmed_progress  # noqa: E402
import stored  # noqa: E402
from tuner.search.studies import locate  # noqa: E402

HERE = Path(__file__).parent
PATIENCE, PRECISION = 40, 0.02  # the defaults the run had
optuna.logging.set_verbosity(optuna.logging.WARNING)


def race(records, goal, confirmation, measured, last_trial, log):
    """One race as confirm.confirm_study runs it (its candidates, then those left out), with
    the speeds the final race measured."""
    speeds = dict(confirmation.speeds) if confirmation else {}
    entered = candidates(records, goal)
    for round_ in (1, 2):
        for t in entered:
            speeds[t.number] = measured.get(t.number, t.speed)
        log.append(f"race {[t.number for t in entered]}: " + ", ".join(
            f"{t.number} {speeds[t.number].value:.2f}x"
            + ("" if t.number in measured else " (own estimate: never raced)")
            for t in entered))
        confirmation = Confirmation("replayed", "", speeds, 0.0, 0,
                                    tuple(t.number for t in entered), last_trial)
        if round_ == 2:
            break
        winner, _ = choose(records, goal, confirmation)
        low = speed_of(winner, confirmation).speedup.low
        entered = [t for t in feasible(records, goal)
                   if t.number not in speeds and t.speed.speedup.high >= low]
        if not entered:
            break
        entered = [winner, *entered[:3]]
    return confirmation


def main():
    storage = locate(str(stored.studies(HERE / "cost-floor"))).storage()
    studies = [optuna.load_study(study_name=n, storage=storage)
               for n in optuna.get_all_study_names(storage)]
    order = ["deepcache", "deepcache+tome", "deepcache+tgate", "deepcache+tome+tgate"]
    studies.sort(key=lambda s: order.index(StudyRecord.of(s).combo))
    saved_total = 0.0
    for i, study in enumerate(studies):
        record = StudyRecord.of(study)
        goal, combo = record.goal, record.combo
        floor = floor_of(studies[:i], goal)
        records = sorted(trial_records(study), key=lambda r: r.number)
        measured = dict(record.confirmation.speeds) if record.confirmation else {}
        evaluated = [r for r in records if r.evaluated]
        points = record.distinct_points or 0
        old_stop = new_stop = None
        confirmation, log = None, []
        for n, last in enumerate(evaluated, 1):
            prefix = [r for r in records if r.number <= last.number]
            args = dict(points=points, trials=200, patience=PATIENCE, stop_when_met=False,
                        precision=PRECISION, floor=floor)
            if old_stop is None and finished(prefix, goal, **args):
                old_stop = n
            while new_stop is None:
                if finished(prefix, goal, **args, confirmation=confirmation):
                    new_stop = n
                elif unconfirmed_progress(prefix, goal, PATIENCE, PRECISION, confirmation):
                    log.append(f"after evaluation {n}:")
                    confirmation = race(prefix, goal, confirmation, measured, last.number, log)
                    continue
                break
        old_stop, new_stop = old_stop or len(evaluated), new_stop or len(evaluated)
        saved = sum(r.seconds.get("total", 0.0) for r in evaluated[new_stop:old_stop])
        saved_total += saved
        print(f"{combo}: stops after {old_stop} evaluations as run, after {new_stop} with "
              f"confirmed progress; {saved:.0f} trial seconds fewer, before its races")
        for line in log:
            print("   ", line)
    print(f"all combos: {saved_total:.0f} trial seconds fewer")


main()
