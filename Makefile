# fairgpu: `make demo` runs the main job, `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_CORE := $(VENV)/.core-installed
STAMP_TEST := $(VENV)/.test-installed
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: demo test bench bench-mypyc prometheus clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip

# pip's and the build backend's chatter goes to a log, shown only when the install fails.
$(STAMP_CORE): pyproject.toml | $(BIN)/python
	@echo "installing fairgpu with the server extra into $(VENV) (log: $(VENV)/install.log)"
	@$(PIP) install -e '.[server]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	$(BIN)/python -c "import scheduler, quota, workloads, sqlmodel, ray, fastapi"
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	@echo "installing fairgpu with the test extras into $(VENV) (log: $(VENV)/install.log)"
	@$(PIP) install -e '.[test]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	$(BIN)/python -c "import scheduler, quota, workloads, sqlmodel, ray, fastapi, pytest, torch, tensorflow"
	touch $@ $(STAMP_CORE)

# Prometheus (Debian's package) for the metrics and alert-rule tests.
prometheus:
	bash deploy/install-prometheus.sh

# PORT=8470 serves the demo's API there (default: any free port; the URL is printed).
demo: $(STAMP_CORE)
	$(BIN)/fairgpu demo $(if $(PORT),--port $(PORT))

test: $(STAMP_TEST) prometheus
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Quick forms of the policy, simulator and loop benchmarks, each followed by the figure
# docs/benchmarks.md records for it ("make bench" lines there). Not part of `make test`.
bench: $(STAMP_TEST)
	$(BIN)/python tests/perf/bench_simulate.py --jobs 30000 --days 9 --repeats 1
	@grep '^| make bench | bench_simulate' docs/benchmarks.md | sed 's/^/recorded: /'
	$(BIN)/python tests/perf/bench_decide.py --sizes 1000,10000 --repeats 3
	@grep '^| make bench | bench_decide' docs/benchmarks.md | sed 's/^/recorded: /'
	$(BIN)/python tests/perf/bench_loop.py --quick
	@grep '^| make bench | bench_loop' docs/benchmarks.md | sed 's/^/recorded: /'

# The mypyc prototype of quota/ (issue 25): compiled into build/mypyc, timed beside the pure tree.
bench-mypyc: $(STAMP_TEST)
	tests/perf/build_mypyc.sh build/mypyc
	PYTHONPATH=$(CURDIR) $(BIN)/python tests/perf/bench_simulate.py --jobs 30000 --days 9 --repeats 1
	PYTHONPATH=$(CURDIR)/build/mypyc:$(CURDIR) $(BIN)/python tests/perf/bench_simulate.py --jobs 30000 --days 9 --repeats 1
	@grep '^| make bench-mypyc |' docs/benchmarks.md | sed 's/^/recorded: /'

clean:
	rm -rf $(VENV) build *.egg-info
