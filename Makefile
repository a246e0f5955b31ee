# fairgpu: `make demo` runs the main job, `make test` runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_CORE := $(VENV)/.core-installed
STAMP_TEST := $(VENV)/.test-installed
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: demo test bench prometheus clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(STAMP_CORE): pyproject.toml | $(BIN)/python
	$(PIP) install -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import scheduler, quota, workloads"
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import scheduler, quota, workloads, pytest, torch, tensorflow"
	touch $@ $(STAMP_CORE)

# Prometheus (Debian's package) for the metrics and alert-rule tests.
prometheus:
	bash deploy/install-prometheus.sh

demo: $(STAMP_CORE)
	$(BIN)/fairgpu demo

test: $(STAMP_TEST) prometheus
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP_TEST)
	$(BIN)/python tests/perf/bench_decide.py

clean:
	rm -rf $(VENV) build *.egg-info
