# `make demo` and `make test` work on a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install first. On a CPU-only machine that already holds this CPU wheel pip
# takes it from disk; elsewhere pip fetches the platform's default (CUDA on Linux) build.
TORCH ?= torch==2.13.0

.PHONY: install demo test clean browser postgres

$(BIN)/tuner: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,postgres]"
	touch $@

install: $(BIN)/tuner

# tiny-shapes: a toy pipeline with SD1.5's architecture, trained on coloured shapes and scored
# by its own trained CLIP, so the CLIP-score budget (2 %) separates configurations for real.
demo: install
	$(BIN)/tuner run --pipe tiny-shapes --device cpu --combo all --trials 6 --steps 25 \
		--batch-size 4 --num-samples 16 --studies studies/demo \
		--output studies/demo/search_params.json
	$(BIN)/tuner show --output studies/demo/search_params.json
	$(BIN)/tuner report --studies studies/demo

# The report's tests render it in a real headless Chromium: Debian's package, as root or
# through sudo.
browser:
	@command -v chromium >/dev/null || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The PostgreSQL tests start a server of their own: Debian's server package (initdb, pg_ctl,
# kept in /usr/lib/postgresql/<version>/bin), as root or through sudo.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The tests in parallel, one process per core and a test file per process (its fixtures built
# once, its tests in order), then those marked `serial` alone.
JOBS ?= auto
test: install browser postgres
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -m serial

clean:
	rm -rf $(VENV) studies/demo
