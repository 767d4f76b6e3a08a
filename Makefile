# One-command set-up: every target creates .venv if needed and installs privlens into it.
# Torch is pinned to a build that installs from local disk; an existing torch is kept:
#   - if the base interpreter already has torch, the venv sees it (--system-site-packages);
#   - if the venv already has torch, nothing is reinstalled.
# Override with e.g. `make test TORCH_SPEC="torch==2.13.0"` or `make test PYTHON=python3.12`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-quick lint-imports bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $$($(PYTHON) -c 'import torch' >/dev/null 2>&1 && echo --system-site-packages) $(VENV)
	@$(PY) -c 'import torch' >/dev/null 2>&1 || $(PY) -m pip install --progress-bar off $(TORCH_SPEC)
	$(PY) -m pip install --progress-bar off -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/optics demo --out runs/demo
	$(VENV)/bin/deid demo --out runs/demo

test: setup
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: setup
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint-imports: setup
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/psf_speed.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
