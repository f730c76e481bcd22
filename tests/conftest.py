import signal

import pytest
import torch

from tuner.accelerators import leftovers
from tuner.presets import build_pipeline

torch.set_num_threads(1)  # several test processes may share the 2 cores


@pytest.fixture(scope="session")
def tiny_sd():
    pipe = build_pipeline("tiny-sd")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_sdxl():
    pipe = build_pipeline("tiny-sdxl")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(autouse=True)
def _pipelines_stay_plain(request):
    """Every test leaves the shared pipelines exactly plain."""
    yield
    for name in ("tiny_sd", "tiny_sdxl"):
        if name in request.fixturenames:
            assert leftovers(request.getfixturevalue(name)) == []


@pytest.fixture(autouse=True)
def _solver_space_restored():
    """A run (`main(["run", ..., "--search-sched", ...])`) sets the solver's searched values for
    its process; each test starts from the values the one before it started from."""
    from tuner.accelerators import solver

    before = solver.space
    yield
    solver.configure(before)


@pytest.fixture
def terminal_sigint():
    """Ctrl-C as in a terminal, however the suite was launched: a shell's background job (and
    so anything it starts) inherits SIGINT ignored, which the tuner rightly keeps ignoring."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
