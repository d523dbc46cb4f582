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

.PHONY: run test bench gpu-check gpu-bundle clean-venv browser

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

# one pytest process: every test starts its own Ray (own temp dir, ports, namespace) and stops only that,
# so a study of yours running on this machine survives it (tests/test_zz_bystander.py proves it)
test: $(STAMP) browser
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/python -m pytest -q -ra $(PYTEST_ARGS)

bench: $(STAMP)
	cd benchmarks && for f in noise_throughput train_throughput sampling_throughput compile_benefit trial_cost trial_overhead gpu_busy scheme_cost; do \
	  echo "== $$f"; ../$(VENV)/bin/python $$f.py || exit 1; done
	@echo "== study_wall_time (n2n_loss and ddpm_schedule at the quick budget, each run fresh: about 10 min each)"
	$(VENV)/bin/python benchmarks/study_wall_time.py n2n_loss --budget quick
	$(VENV)/bin/python benchmarks/study_wall_time.py ddpm_schedule --budget quick
	@echo "== study_efficiency (the studies under $${DENOISE_STUDY_STORAGE:-$$HOME/denoise-studies})"
	@for d in $${DENOISE_STUDY_STORAGE:-$$HOME/denoise-studies}/*/; do \
	  test -f $$d/trials.parquet && $(VENV)/bin/python benchmarks/study_efficiency.py $$d; done; true

# On a GPU machine lent to a session (about 15 minutes of device time in all): first `make gpu-bundle` here, then on
# the device `source .gpu-bundle/on-device.sh; make gpu-check` (nothing is installed there: the wheels travel).
# In order of value, each result written to $(GPU_CHECK_DIR)/results.md as it is measured, under 8 minutes on one
# H100: the gpu tests, each paper (`full`) budget's steps/s and the sizing it implies, a quick study's wall time.
# DATA_ROOT=DIR times the paper budgets on their own data (default: bundled images of the same sizes).
DATA_ROOT ?=
GPU_CHECK_DIR ?= /tmp/gpu-check
GPU_PYTHON ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_DIR) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

gpu-bundle:
	bash ../shared/gpu/bundle.sh

clean-venv:
	rm -rf $(VENV)
