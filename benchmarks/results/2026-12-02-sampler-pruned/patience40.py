"""The default TPE replayed on the deepcache+tome table with the runner's own --patience 40
(not read off afterwards): per seed, the evaluation that found the optimum (None: the study
stopped first), the evaluations made and the answer reached over the optimum. ROOT is a
checkout of the tuner, to compare two versions on the same seeds:

    python benchmarks/results/2026-12-02-sampler-pruned/patience40.py ROOT BUDGET FIRST LAST
"""

import statistics
import sys
import warnings
from pathlib import Path

root, budget = sys.argv[1], float(sys.argv[2])
seeds = range(int(sys.argv[3]), int(sys.argv[4]))
sys.path[:0] = [root, root + "/benchmarks"]
sys.path.append(str(Path(__file__).resolve().parents[2]))  # stored.py, where ROOT has none
warnings.filterwarnings("ignore")

import optuna  # noqa: E402

import sampler_bench as sb  # noqa: E402
import stored  # noqa: E402
from tuner.setting import Goal  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
data = stored.read_json(root + "/benchmarks/tables/tiny-shapes-deepcache+tome.json")
table = sb.Table(data, Goal(loss_budget=budget, metric=data["metric"]))
found, evaluations, reached = 0, [], []
for seed in seeds:
    run = sb.replay_once(table, "tpe", seed, budget=len(data["grid"]), patience=40,
                         patiences=(40,))
    found += run["found_at"] is not None
    evaluations.append(run["evaluations"])
    reached.append(run["reached"][40])
    print(seed, run["found_at"], run["evaluations"], round(run["reached"][40], 3), flush=True)
print("found", found, "of", len(evaluations), "; evaluations: median",
      statistics.median(evaluations), "; worst answer reached", round(min(reached), 3))
