"""The sampler benchmark (benchmarks/sampler_bench.py) replays the tuner's real search layer
against a recorded table: here, the small DeepCache table of tiny-shapes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "tables" / "tiny-shapes-deepcache.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

import sampler_bench  # noqa: E402
from tuner.setting import Goal  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return sampler_bench.Table(json.loads(TABLE.read_text()), Goal(loss_budget=0.02))


def test_the_table_has_every_grid_point_and_a_feasible_optimum(table):
    assert len(table.data["grid"]) == 16 and len(table.points) == 16
    assert table.optimum is not None and table.optimum > 1.5


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_replay_finds_the_tables_optimum_through_the_real_search(table, sampler):
    for seed in range(3):
        run = sampler_bench.replay_once(table, sampler, seed, budget=16)
        assert run["found_at"] is not None and 1 <= run["found_at"] <= 16
        assert run["evaluations"] >= run["found_at"]
        assert run["improved_at"] and run["improved_at"][-1] <= run["found_at"]
    # Nothing of the table-driven search leaks into the tuner afterwards.
    from tuner import accelerators
    from tuner.search import objective, runner

    assert accelerators.check.__module__ == "tuner.accelerators"
    assert objective.canonical_key.__module__ == runner.canonical_key.__module__ == \
        "tuner.search.space"
    assert runner.Objective is objective.Objective


def test_patience_outcome_counts_gaps_before_the_answer():
    run = {"found_at": 30, "improved_at": [1, 5, 30]}
    assert sampler_bench.patience_outcome(run, 25)
    assert not sampler_bench.patience_outcome(run, 24)
    assert not sampler_bench.patience_outcome({"found_at": None, "improved_at": [1]}, 99)
