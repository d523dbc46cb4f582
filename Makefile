# `make run`: set up .venv if needed, run the n2n_loss study at the quick budget on bundled data,
# print where its report is. `make test`: set up .venv if needed, run the test suite.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
STUDY ?= n2n_loss
BUDGET ?= quick
PYTEST_ARGS ?=

.PHONY: run test bench clean-venv browser

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]' 2>&1 | { grep -v "is ignored" || true; }
	$(VENV)/bin/python -c "import denoise_core, studies, reports, torch, ray, optuna"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/denoise-study run $(STUDY) --budget $(BUDGET)

# Headless Chromium for the report's browser tests (Debian's package); skipped if it cannot be had.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "WARNING: could not install chromium; browser tests will be skipped"; \
	  else echo "WARNING: chromium missing and cannot be installed here; browser tests will be skipped"; fi; }

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q -ra $(PYTEST_ARGS)

bench: $(STAMP)
	cd benchmarks && for f in noise_throughput train_throughput sampling_throughput compile_benefit trial_cost gpu_busy; do \
	  echo "== $$f"; ../$(VENV)/bin/python $$f.py || exit 1; done
	@echo "== study_efficiency (the studies under $${DENOISE_STUDY_STORAGE:-$$HOME/denoise-studies})"
	@for d in $${DENOISE_STUDY_STORAGE:-$$HOME/denoise-studies}/*/; do \
	  test -f $$d/trials.parquet && $(VENV)/bin/python benchmarks/study_efficiency.py $$d; done; true

clean-venv:
	rm -rf $(VENV)
