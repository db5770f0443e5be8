# Two entry points, each self-contained on a fresh machine: `make demo`, `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,plot]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/varcompress demo --force

test: setup
	$(BIN)/python -m pytest -q

.PHONY: setup demo test
