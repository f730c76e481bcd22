"""The role of a process in a run says what it does (the worker protocol's rules 6 and 7)."""

from __future__ import annotations

import pytest

from tuner.options import RunOptions
from tuner.search.roles import Alone, Launcher, Worker, role_of


@pytest.mark.parametrize("workers, worker, expected, does", [
    (1, None, Alone(), (True, True, True, True)),
    (4, None, Launcher(4), (False, False, True, True)),
    (4, 0, Worker(0), (True, True, False, False)),
    (4, 3, Worker(3), (True, False, False, False)),
    (1, 2, Worker(2), (True, False, False, False)),  # as a launcher starts it
], ids=["alone", "launcher", "worker 0", "worker 3", "worker of one"])
def test_each_role_says_who_searches_races_writes_and_speaks(workers, worker, expected, does):
    role = RunOptions(workers=workers, worker=worker).role
    assert role == expected == role_of(workers=workers, worker=worker)
    assert (role.searches, role.races, role.writes_results, role.speaks) == does
    assert role.index == worker  # its sampler stream: worker_seed(seed, index)
