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

# Every pipeline target validates its config set first: a YAML syntax error gets its file, line
# and column, a hostile file (an alias bomb, a repeated key) is refused in well under a second
# (Snakemake's own --configfile loader says only "not valid JSON or YAML", and merges the files
# before our Snakefile can check them).
define workflow
	$(BIN)/python -m seqcomp validate $(1)
	$(BIN)/snakemake --workflow-profile workflow/profiles/$(PROFILE) --configfile $(1)
endef

.PHONY: setup run pages smoke etth1 etth1-long etth1-long-cpu etth1-compress etth1-lowbit pretrain bench bench-gpu bench-extra bench-page test test-fast ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch pinned and installed first: a CPU machine gets the CPU build, never a multi-GB CUDA one
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## the default pipeline (config/config.yaml, 2 cores)
	$(call workflow,$(CONFIG))

pages: setup  ## docs/results/<page>.md + figures of the config set CONFIG (the workflow's pages rule; runs what is missing)
	$(BIN)/python -m seqcomp validate $(CONFIG)
	$(BIN)/snakemake pages --workflow-profile workflow/profiles/$(PROFILE) --configfile $(CONFIG)
	$(BIN)/python -m seqcomp pages --index

smoke: setup
	$(call workflow,config/smoke.yaml)

etth1: setup  ## the ETTh1 benchmark at lookback 96, every model, 4 horizons, 1 seed (CPU: < 2 h)
	$(call workflow,config/etth1.yaml)

etth1-long: setup  ## + lookbacks 336/512/720 and 3 seeds for the headline models (GPU advised: PROFILE=gpu)
	$(call workflow,config/etth1.yaml config/etth1_long.yaml)

etth1-long-cpu: setup  ## the part of etth1-long a 2-core CPU runs in well under an hour (closed-form models, DLinear)
	$(call workflow,config/etth1.yaml config/etth1_long_cpu.yaml)

etth1-compress: setup  ## every compression pass on every ETTh1 model at horizon 96
	$(call workflow,config/etth1.yaml config/etth1_compress.yaml)

etth1-lowbit: setup  ## each low-bit method swept from ~16x to 4x stored-size reduction on every ETTh1 model at horizon 96
	$(call workflow,config/etth1.yaml config/etth1_lowbit.yaml)

pretrain: setup  ## pre-train a small TTM and MoE on a generated corpus, transfer to ETTh1 (CPU: about 35 min)
	$(call workflow,config/pretrain.yaml)

# Micro-benchmarks: each registered command (seqcomp.publish.bench.BENCHES, the only list of them)
# writes bench/results/<file>.json with its provenance (command, commit, machine, wall seconds);
# `make bench-page` turns them into docs/results/microbench.md. A command whose input is missing
# (trained models of another run, the state-spaces/s4 clone) is skipped, saying what makes it.
bench: setup  ## CPU micro-benchmarks at their default sizes: about 9 CPU-minutes, 8 min wall on 2 cores
	$(BIN)/python -m seqcomp bench --group cpu

bench-gpu: setup  ## GPU micro-benchmarks (a few minutes on an H100); without CUDA, says so and runs nothing
	$(BIN)/python -m seqcomp bench --group gpu

bench-extra: setup  ## benchmarks on other runs' outputs (ETTh1, state-spaces/s4) and the default workflow's job costs (~4 min)
	$(BIN)/python -m seqcomp bench --group extra

bench-page: setup  ## docs/results/microbench.md from bench/results, and the index docs/benchmarks.md
	$(BIN)/python -m seqcomp pages --bench --index

test: setup  ## unit tests + end-to-end runs of the real workflow on config/smoke.yaml
	$(BIN)/python -m pytest

test-fast: setup  ## unit tests only (no end-to-end workflow runs): a few minutes
	$(BIN)/python -m pytest -m "not slow"

ui: setup  ## MLflow UI over the project's store, on 127.0.0.1 only; one worker is plenty for one person
	@# MLflow 3 opens an experiment on its (empty) traces overview: these links open its runs
	$(BIN)/python -m seqcomp ui-links --store results/mlflow.db --url http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath results/mlflow.db) --host 127.0.0.1 --port 5000 --workers 1

clean:
	rm -rf results .snakemake
