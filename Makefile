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

.PHONY: run test bench gpu-check clean-venv browser

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
	cd benchmarks && for f in noise_throughput train_throughput sampling_throughput compile_benefit trial_cost trial_overhead gpu_busy; do \
	  echo "== $$f"; ../$(VENV)/bin/python $$f.py || exit 1; done
	@echo "== study_wall_time (n2n_loss and ddpm_schedule at the quick budget, each run fresh: about 10 min each)"
	$(VENV)/bin/python benchmarks/study_wall_time.py n2n_loss --budget quick
	$(VENV)/bin/python benchmarks/study_wall_time.py ddpm_schedule --budget quick
	@echo "== study_efficiency (the studies under $${DENOISE_STUDY_STORAGE:-$$HOME/denoise-studies})"
	@for d in $${DENOISE_STUDY_STORAGE:-$$HOME/denoise-studies}/*/; do \
	  test -f $$d/trials.parquet && $(VENV)/bin/python benchmarks/study_efficiency.py $$d; done; true

# On a CUDA machine: the gpu tests, n2n_loss and ddpm_schedule quick end to end (timed), trial overhead
# under Ray, packing 1 vs 0.25 vs 0.125 GPU per trial, and with DATA_ROOT=DIR (../shared/data/benchmarks) the
# noise_level paper budget and its best models under the paper protocol. Logs under $(GPU_CHECK_DIR).
DATA_ROOT ?=
GPU_CHECK_DIR ?= /tmp/gpu-check
gpu-check: $(STAMP)
	mkdir -p $(GPU_CHECK_DIR)
	nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $(GPU_CHECK_DIR)/device.txt
	$(VENV)/bin/python -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tee $(GPU_CHECK_DIR)/gpu-tests.log
	for s in n2n_loss ddpm_schedule; do \
	  /usr/bin/time -f "$$s quick on one GPU: %e s wall" $(VENV)/bin/denoise-study run $$s --budget quick \
	    --storage $(GPU_CHECK_DIR)/studies --fresh --quiet 2>&1 | tail -3 | tee -a $(GPU_CHECK_DIR)/studies.log || exit 1; done
	$(VENV)/bin/python benchmarks/trial_overhead.py --from $(GPU_CHECK_DIR)/studies/n2n_loss | tee $(GPU_CHECK_DIR)/overhead.log
	$(VENV)/bin/python benchmarks/gpu_busy.py --study n2n_loss --budget quick --shares 1 0.25 0.125 | tee $(GPU_CHECK_DIR)/packing.log
	$(VENV)/bin/python benchmarks/noise_throughput.py --device cuda | tee $(GPU_CHECK_DIR)/noise.log
	@# a paper budget: DnCNN's data, model and noise (noise_level full); Set12 for test, the DnCNN paper's rows beside it
	@if [ -n "$(DATA_ROOT)" ]; then \
	  /usr/bin/time -f "noise_level paper budget (full) on one GPU: %e s wall" $(VENV)/bin/denoise-study run noise_level \
	    --budget full --data-root $(DATA_ROOT) --dataset train=Train400,val=Kodak24,test=Set12 \
	    --storage $(GPU_CHECK_DIR)/studies --fresh --quiet 2>&1 | tail -5 | tee $(GPU_CHECK_DIR)/paper.log; \
	  $(VENV)/bin/denoise-study evaluate --study noise_level --storage $(GPU_CHECK_DIR)/studies --test Set12 \
	    --data-root $(DATA_ROOT) --noise gaussian:sigma=25 2>/dev/null | tee -a $(GPU_CHECK_DIR)/paper.log; \
	else echo "paper budget skipped: make gpu-check DATA_ROOT=DIR (Train400, Kodak24, Set12 under DIR)"; fi

clean-venv:
	rm -rf $(VENV)
