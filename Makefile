# `make demo` and `make test` work on a fresh machine with only Python 3.11: each sets up .venv.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU machines: install the CPU build of torch first, or a later unpinned `torch` pulls GBs of CUDA wheels
TORCH  ?= torch==2.13.0
DATA   ?= data/demo
# pytest-xdist workers of `make test` (0: one process); tests/conftest.py groups the tests per worker
TEST_WORKERS ?= 2

.PHONY: venv demo test lint sample bench-ingest serve stop clean

# the `dask` extra too: tests/test_cluster.py runs the pipeline on a local Dask cluster
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,dask,ray]"
	touch $@

venv: $(VENV)/.installed

# one line per stage, then where the outputs are, what the scores mean at this scale and what to run next
demo: venv
	$(VENV)/bin/trelm run --data-root $(DATA) --config sample

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: venv
	$(VENV)/bin/ruff check .

sample: venv
	$(PY) sample/make_sample.py sample

bench-ingest: venv
	$(PY) benchmarks/ingest.py $(FILE)

# a Prefect server on 127.0.0.1:$(PREFECT_PORT) (default 4200), the process pool, the deployments and a
# worker, in the background; state, logs and pid files under $(PREFECT_HOME) (default ./.prefect)
serve: venv
	PREFECT="$(CURDIR)/$(VENV)/bin/prefect" deploy/serve.sh start

stop:
	deploy/serve.sh stop

clean:
	rm -rf $(VENV) data/demo
