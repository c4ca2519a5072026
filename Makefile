# The two commands a newcomer needs: `make serve` (set up, then start the archive on its embedded default:
# SQLite + local files) and `make test` (set up, then run the linters and the whole test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
DATA_DIR ?= ./data
# torch: the version the reference triage bundle records. TORCH_INDEX: a pip index to take it from. Set it to
# PyTorch's CPU wheel index URL for a CPU-only install that never downloads CUDA wheels (PyPI's Linux torch
# is a CUDA build); empty, torch comes from pip's configured indexes (this machine's has the CPU build).
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=

.PHONY: setup serve test lint viewer clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, so that the project's torch range is already satisfied when the rest is installed.
	$(PIP) install $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[dev]" "torch==$(TORCH_VERSION)"
	touch $@

setup: $(VENV)/.installed

viewer: setup
	-$(VENV)/bin/imaging viewer fetch --data-dir $(DATA_DIR)

serve: setup viewer
	$(VENV)/bin/imaging serve --data-dir $(DATA_DIR)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
