# One command to set up and run the pipeline, one to set up and run the tests.
# Both create .venv on first use and reuse it afterwards (the stamp tracks pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seqcomp-installed
CONFIG ?= config/config.yaml
# workflow/profiles/<PROFILE>: default (2 cores), gpu (a machine with one GPU), slurm (a cluster)
PROFILE ?= default
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run pages smoke etth1 etth1-long etth1-long-cpu etth1-compress bench bench-gpu bench-extra bench-page test test-fast ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch pinned and installed first: a CPU machine gets the CPU build, never a multi-GB CUDA one
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## the default pipeline (config/config.yaml, 2 cores)
	@# validate first: a YAML syntax error gets its file, line and column (Snakemake's own
	@# --configfile loader reports only "not valid JSON or YAML")
	$(BIN)/python -m seqcomp validate $(CONFIG)
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile $(CONFIG)

pages: setup  ## docs/results/<page>.md + figures from the summary of the config set CONFIG (after the run)
	$(BIN)/python -m seqcomp pages --config $(CONFIG)

smoke: setup
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile config/smoke.yaml

etth1: setup  ## the ETTh1 benchmark at lookback 96, every model, 4 horizons, 1 seed (CPU: < 2 h)
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile config/etth1.yaml

etth1-long: setup  ## + lookbacks 336/512/720 and 3 seeds for the headline models (GPU advised: PROFILE=gpu)
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile config/etth1.yaml config/etth1_long.yaml

etth1-long-cpu: setup  ## the part of etth1-long a 2-core CPU runs in well under an hour (closed-form models, DLinear)
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile config/etth1.yaml config/etth1_long_cpu.yaml

etth1-compress: setup  ## every compression pass on every ETTh1 model at horizon 96
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile config/etth1.yaml config/etth1_compress.yaml

# Micro-benchmarks: each script writes bench/results/<file>.json with its provenance (command,
# commit, machine, wall seconds); `make bench-page` turns them into docs/results/microbench.md.
# The commands are those seqcomp.bench.BENCHES registers (a test keeps them equal).
bench: setup  ## CPU micro-benchmarks at their default sizes: about 9 CPU-minutes, 8 min wall on 2 cores
	python bench/seq_scaling.py --out bench/results/seq_scaling_cpu.json
	python bench/train_throughput.py --device cpu --out bench/results/train_cpu.json
	python bench/memory_delay.py --out bench/results/memory_delay.json
	python bench/memory_delay.py --lag 192 --out bench/results/memory_delay_lag192.json
	python bench/job_costs.py --run config/smoke.yaml --cores 2 --out bench/results/job_costs_smoke.json
	if ls results/default/train/*/*/L96-H48/seed0/model.pt >/dev/null 2>&1; then \
	  python bench/int8_latency.py --models results/default/train/*/*/L96-H48/seed0/model.pt --out bench/results/int8_latency_default.json; \
	else echo "int8 latency skipped: no trained models in results/default (make run first)"; fi

bench-gpu: setup  ## GPU micro-benchmarks (a few minutes on an H100); without CUDA, says so and runs nothing
	if python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
	  python bench/train_throughput.py --device cuda --out bench/results/train_cuda_b32.json && \
	  python bench/train_throughput.py --device cuda --batch 256 --steps 30 --out bench/results/train_cuda_b256.json && \
	  python bench/train_throughput.py --device cuda --models s4d,mamba --lookbacks 96,720 --steps 20 --out bench/results/train_cuda_ssm_b32.json && \
	  python bench/train_throughput.py --device cuda --models s4d,mamba --lookbacks 96,720 --steps 20 --batch 256 --out bench/results/train_cuda_ssm_b256.json && \
	  if ls results/etth1/train/etth1/*/L96-H96/seed0/model.pt >/dev/null 2>&1; then \
	    python bench/gpu_fp8.py --data results/etth1/data/etth1 --models results/etth1/train/etth1/*/L96-H96/seed0/model.pt --out bench/results/gpu_fp8.json; \
	  else echo "FP8 skipped: no ETTh1 models in results/etth1 (make etth1 first)"; fi; \
	else echo "bench-gpu: no CUDA device here, nothing run"; fi

bench-extra: setup  ## benchmarks on other runs' outputs (ETTh1, state-spaces/s4) and the default workflow's job costs (~4 min)
	python bench/job_costs.py --run config/config.yaml --cores 2 --out bench/results/job_costs_default.json
	if ls results/etth1/train/etth1/*/L96-H96/seed0/model.pt >/dev/null 2>&1; then \
	  python bench/int8_latency.py --models results/etth1/train/etth1/*/L96-H96/seed0/model.pt --out bench/results/int8_latency_cpu.json && \
	  python bench/linear_family.py run --data results/etth1/data/etth1 --out bench/results/linear_family.jsonl; \
	else echo "ETTh1 int8 latency and linear family skipped: no results/etth1 (make etth1 first)"; fi
	if [ -f /tmp/s4/models/s4/s4.py ]; then \
	  python bench/s4_reference_check.py --reference /tmp/s4/models/s4/s4.py --out bench/results/s4_reference_check.json; \
	else echo "S4 reference check skipped: git clone https://github.com/state-spaces/s4 /tmp/s4 (and pip install einops)"; fi

bench-page: setup  ## docs/results/microbench.md from bench/results
	$(BIN)/python -m seqcomp pages --bench

test: setup  ## unit tests + end-to-end runs of the real workflow on config/smoke.yaml
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

ui: setup  ## MLflow UI over the project's store, on 127.0.0.1 only; one worker is plenty for one person
	@# MLflow 3 opens an experiment on its (empty) traces overview: these links open its runs
	$(BIN)/python -m seqcomp ui-links --store results/mlflow.db --url http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath results/mlflow.db) --host 127.0.0.1 --port 5000 --workers 1

clean:
	rm -rf results .snakemake
