# ntm-bench: `make bench` runs a suite (default: quick) and writes its report; `make test` runs the tests.
# Both create or update the virtual environment in .venv first, so a fresh clone needs nothing else.

PYTHON_SYSTEM ?= python3
VENV          ?= .venv
PY            := $(VENV)/bin/python
TORCH         ?= torch==2.13.0
SUITE         ?= quick
ARGS          ?=
EXTRAS        ?= dev
EXECUTOR      ?= local
WORKERS       ?= 2
# pytest-xdist processes for `make test`: auto = one per CPU core; TEST_WORKERS=0 runs every test in one process
TEST_WORKERS  ?= auto
STAMP          = $(VENV)/.installed-$(subst /,_,$(subst =,_,$(TORCH)))
DEV_STAMP      = $(VENV)/.installed-dev
RAY_STAMP      = $(VENV)/.installed-ray

.PHONY: install install-dev bench report test test-all lint perf clean help

help:
	@echo "make bench [SUITE=quick] [ARGS='--set train.lr=3e-4 --workers 2']   train a suite and write its report"
	@echo "make bench EXECUTOR=ray                                              the same on Ray (RAY_ADDRESS or local)"
	@echo "make report SUITE=name                                                re-render a suite's report"
	@echo "make test [ARGS='-k name'] [TEST_WORKERS=auto]                         run the tests (CI runs this)"
	@echo "make lint | perf | install [TORCH=torch==2.13.0] | clean"

$(PY):
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch is installed first from the explicit pin, so the unpinned `torch` in setup.cfg is already satisfied and
# pip never reaches for a multi-GB CUDA build. Override with `make install TORCH=...`.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-torch* && touch $@

$(DEV_STAMP): $(STAMP) setup.cfg
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# The ray extra, only for `make bench EXECUTOR=ray` (the dev extra has it too).
$(RAY_STAMP): $(STAMP) setup.cfg
	$(PY) -m pip install --quiet -e ".[ray]"
	touch $@

install: $(STAMP)

install-dev: $(DEV_STAMP)

bench: $(STAMP) $(if $(filter ray,$(EXECUTOR)),$(RAY_STAMP))
	$(PY) -m bench run --suite $(SUITE) --executor $(EXECUTOR) $(if $(filter local,$(EXECUTOR)),--workers $(WORKERS)) $(ARGS)

report: $(STAMP)
	$(PY) -m bench report --suite $(SUITE) $(ARGS)

# In parallel (pytest-xdist); --dist loadgroup keeps the tests that share a module fixture on one worker (tests/conftest.py)
test: $(DEV_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check bench models tasks tests scripts

perf: $(STAMP)
	$(PY) -m bench.perf $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
