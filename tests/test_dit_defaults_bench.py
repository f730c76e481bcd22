"""The defaults benchmark (benchmarks/dit_defaults_bench.py): each default is a configuration the
tuner's registry takes (inside `admitting`, which gives the knobs back after), and maps onto
diffusers' config as documented."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import dit_defaults_bench  # noqa: E402
from tuner.accelerators import ACCELERATORS, AcceleratorError, instances  # noqa: E402


def test_the_defaults_validate_only_while_admitted_and_the_spaces_come_back():
    before = {name: ACCELERATORS[name].space for name, _ in dit_defaults_bench.ADMIT}
    configs = dit_defaults_bench.DEFAULTS.values()
    with pytest.raises(AcceleratorError, match="outside"):
        for config in configs:
            instances(config)
    with dit_defaults_bench.admitting():
        for config in configs:
            instances(config)
    assert {name: ACCELERATORS[name].space for name in before} == before


def test_the_defaults_are_diffusers_config_defaults():
    from diffusers import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig,
                           PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig)

    pipe = type("Pipe", (), {"transformer": type("T", (), {"config": {}})(),
                             "current_timestep": 0})()
    made = {name: ACCELERATORS[name]().config(pipe, params)
            for config in dit_defaults_bench.DEFAULTS.values()
            for name, params in config.items() if name != "magcache"}
    assert made["fbcache"].threshold == FirstBlockCacheConfig().threshold
    seer, default = made["taylorseer"], TaylorSeerCacheConfig()
    assert (seer.cache_interval, seer.disable_cache_before_step, seer.max_order,
            seer.use_lite_mode) == (default.cache_interval, default.disable_cache_before_step,
                                    default.max_order, default.use_lite_mode)
    faster = made["fastercache"]
    assert faster.spatial_attention_block_skip_range == \
        FasterCacheConfig.spatial_attention_block_skip_range
    assert faster.spatial_attention_timestep_skip_range == \
        FasterCacheConfig.spatial_attention_timestep_skip_range
    assert made["pab"].spatial_attention_timestep_skip_range == \
        PyramidAttentionBroadcastConfig.spatial_attention_timestep_skip_range
    mag = dit_defaults_bench.DEFAULTS[next(k for k in dit_defaults_bench.DEFAULTS
                                           if k.startswith("MagCache"))]["magcache"]
    default = MagCacheConfig(mag_ratios=[1.0])
    assert (mag["threshold"], mag["max_skip_steps"], mag["retention_ratio"]) == \
        (default.threshold, default.max_skip_steps, default.retention_ratio)
