# Two commands on a fresh clone: `make demo` (the main job) and `make test`.
# torch is installed first and pinned: its CPU wheel; a bare `torch` would pull a CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test soak lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ibc-gym demo --out out

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The slow tests `make test` leaves out: 2,000 make/reset/close cycles of every env (minutes).
soak: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check envs agents ebm_policy demos tests
	$(BIN)/ruff format --check envs agents ebm_policy demos tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/ibc-gym bench env
	$(BIN)/ibc-gym bench dfo

clean:
	rm -rf out $(VENV) .pytest_cache
