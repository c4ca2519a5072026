# The two commands a newcomer needs: `make serve` (set up, then start the archive on its embedded default:
# SQLite + local files) and `make test` (set up, then run the linters and the whole test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
DATA_DIR ?= ./data

.PHONY: setup serve test lint viewer clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU build first, so the project's torch range is already satisfied (no multi-GB CUDA download).
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
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
