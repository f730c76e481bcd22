# `make demo` and `make test` work on a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install first. On a CPU-only machine that already holds this CPU wheel pip
# takes it from disk; elsewhere pip fetches the platform's default (CUDA on Linux) build.
TORCH ?= torch==2.13.0

.PHONY: install demo test clean

$(BIN)/tuner: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/tuner

# The tiny model has random weights, so the demo scores fidelity to the plain pipeline's images
# (SSIM), which is meaningful on any weights, within a 5 % budget.
demo: install
	$(BIN)/tuner run --pipe tiny-sd --device cpu --combo all --trials 8 --steps 8 \
		--batch-size 2 --num-samples 4 --timing-pairs 2 --metric ssim --req-score-loss 0.05 \
		--studies studies/demo --output studies/demo/search_params.json
	$(BIN)/tuner show --output studies/demo/search_params.json
	$(BIN)/tuner report --studies studies/demo

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) studies/demo
