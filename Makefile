# The two commands: `make run` (the local pipeline on the bundled sample) and `make test`.
# Each first runs scripts/setup.sh, which installs only what is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Keras 2 (tf-keras) for the whole project: tensorflow_hub's KerasLayer and TFX's Keras code need it.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# oneDNN's kernels on every x86 CPU: TensorFlow 2.16 turns them on by itself only where the CPU has
# AVX512-VNNI, BF16 or AMX. On a 2-core AVX2-only EPYC they train 1.17x (128 tokens) to 1.41x (192)
# faster than the default Eigen kernels (benchmarks/RESULTS.md, "oneDNN's kernels on AVX2-only CPUs").
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: setup run run-hour base-model covid-transfer test test-fast metadata-server bench bench-peer bench-train bench-scaling lint lock clean image retrain-demo tensorboard serve

setup:
	@scripts/setup.sh

# The main job within its time bound (25 minutes in all): one epoch over the sample's 17,480
# windows (76 articles) with the recipe the Tuner chose for short trainings on unseen windows
# (peak learning rate 2.934e-4, no dropout). Training stops and exports after RUN_BUDGET_MINUTES,
# with its learning-rate decay sized to them (a schedule, not a cut-off). On a 2-core AMD EPYC with
# AVX2 only the 18 minutes held 282 of the 547 steps (oneDNN's kernels on) and the other phases took
# 6 minutes (24 min 18 s in all); at the 15 windows/s of the AVX512-BF16 machines the 547 steps would take about 19
# minutes, not yet measured (docs/make-run.md).
RUN_BUDGET_MINUTES ?= 18
RUN_RECIPE ?= --epochs 1 --learning-rate 2.934e-4 --dropout-rate 0
run: setup
	$(PY) local_runner.py --budget-minutes $(RUN_BUDGET_MINUTES) $(RUN_RECIPE) $(RUN_ARGS)

# The one-hour profile: the user's SQuAD v1.1 training file, split by article (the last 14
# articles are held out: their first 8 paragraphs are the eval split, data/sample/eval.json's 582
# questions; the other 2,146 questions of theirs, heldout.json, judge the model at the end),
# 60 minutes of training (stops and exports at the budget; learning rate sized to it; --epochs 3
# only bounds it), from the pretrained weights, with the recipe the Tuner chose on full SQuAD
# (warmup 10%, no dropout) at batch 16, its peak learning rate 2.934e-4 scaled by the square root
# of the batch ratio: held-out F1 76.24 and 75.45 in two runs against batch 32's 74.95 and batch 8's
# 75.32, with 5.5 GB at the peak where batch 32 took 8.3 (benchmarks/RESULTS.md, "Batch size in the
# hour"); training steps compiled with XLA (--xla: +22% windows/s on its windows). Figures in
# docs/one-hour.md.
#   make run-hour SQUAD_FILE=path/to/train-v1.1.json
HOUR_DIR := runs/hour
HOUR_RECIPE := --batch-size 16 --learning-rate 2.075e-4 --warmup-fraction 0.1 --dropout-rate 0 --xla
run-hour: setup
	@test -n "$(SQUAD_FILE)" || { echo "make run-hour: name your SQuAD v1.1 training file:" \
	  "make run-hour SQUAD_FILE=path/to/train-v1.1.json" >&2; exit 2; }
	$(PY) scripts/split_by_article.py "$(SQUAD_FILE)" --eval-articles 14 --eval-max-paragraphs 8 \
	  --out-dir $(HOUR_DIR)/data
	$(PY) local_runner.py --data-dir $(HOUR_DIR)/data --runs-dir $(HOUR_DIR) --budget-minutes 60 --epochs 3 \
	  $(HOUR_RECIPE) --no-baseline $(RUN_ARGS)
	$(PY) scripts/heldout_scores.py $(HOUR_DIR) $(HOUR_DIR)/data/heldout.json

# A QA-tuned base on the user's SQuAD v1.1 training file, the offline counterpart of Model Maker's
# mobilebert_qa_squad, spent in pieces: each call trains HOURS more, starting from the last call's
# pushed version where its window order stopped (bertqa_cli/base_model.py), with the one-hour
# profile's recipe, a call after the first at half its peak rate (a base begun at batch 32 before the
# recipe changed continues with RUN_ARGS="--batch-size 32 --learning-rate 2.934e-4"); the same 14 articles are held out as for run-hour, and each call prints
# its F1 on their 2,146 held-out questions. Its output is what --init-from takes (docs/base-model.md):
#   make base-model SQUAD_FILE=path/to/train-v1.1.json HOURS=1     # twice: a base of two hours
HOURS ?= 1
BASE_DIR := runs/base
base-model: setup
	@test -n "$(SQUAD_FILE)" || { echo "make base-model: name your SQuAD v1.1 training file:" \
	  "make base-model SQUAD_FILE=path/to/train-v1.1.json HOURS=1" >&2; exit 2; }
	$(PY) -m bertqa_cli base-model --squad-file "$(SQUAD_FILE)" --hours $(HOURS) --runs-dir $(BASE_DIR) \
	  $(HOUR_RECIPE) $(RUN_ARGS)

# Transfer to COVID-QA's held-out articles (scripts/covid_transfer.py): (a) the base zero-shot, (b) the
# encoder fine-tuned on its training articles, (c) the base fine-tuned on them in the same time:
#   make covid-transfer COVID_FILE=path/to/covid-qa.json BASE=runs/base/bertqa/serving/<version>
COVID_MINUTES ?= 15
covid-transfer: setup
	@test -n "$(COVID_FILE)" -a -n "$(BASE)" || { echo "make covid-transfer: name the COVID-QA file and the base:" \
	  "make covid-transfer COVID_FILE=path/to/covid-qa.json BASE=runs/base/bertqa/serving/<version>" >&2; exit 2; }
	$(PY) scripts/covid_transfer.py --covid-file "$(COVID_FILE)" --base "$(BASE)" --minutes $(COVID_MINUTES) $(RUN_ARGS)

# Two workers, one test module each at a time (module fixtures such as a pipeline run stay shared
# within their module): the end-to-end runs spend much of their time in a single thread. Modules
# go out slowest first (tests/conftest.py's SLOWEST_MODULES), not xdist's most-tests-first order.
# scripts/setup_browser.sh: Debian's Chromium for the run-report browser test (when missing);
# scripts/mariadb_local.sh install: Debian's MariaDB for the metadata-server tests (when missing).
test: setup
	@scripts/setup_browser.sh
	@scripts/mariadb_local.sh install
	$(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=15 $(TEST_ARGS)

# The retraining loop on the bundled sample (three spans, default model); see scripts/retrain_demo.py.
retrain-demo: setup
	$(PY) scripts/retrain_demo.py $(RUN_ARGS)

# TensorBoard on the Trainer's logs of every local run (loss, learning rate, windows/s).
tensorboard: setup
	$(VENV)/bin/tensorboard --logdir runs/bertqa/artifacts/Trainer/model_run --bind_all --port 6006

# A local web page and JSON API over the pushed versions, on http://127.0.0.1:8765/ (docs/serve.md):
#   make serve SERVE_ARGS="--runs-dir runs/hour --port 9000"
serve: setup
	$(PY) -m bertqa_cli serve $(SERVE_ARGS)

# ML Metadata on a local MariaDB (docs/metadata-server.md): installs Debian's mariadb-server when
# missing and starts a private instance on 127.0.0.1:3306, data in .mariadb/:
#   BERTQA_METADATA_PASSWORD=... make metadata-server && make run RUN_ARGS="--metadata-mysql bertqa@127.0.0.1"
metadata-server:
	@scripts/mariadb_local.sh start

test-fast: setup
	$(PY) -m pytest -q -m "not e2e" $(TEST_ARGS)

# Benchmarks measure ratios against a peer in the same run; figures and commands are in docs/
# and benchmarks/RESULTS.md. evaluate_tflite.py scores the newest model under runs/ (train-free without one);
# peer_benchmark.py needs a trained model (make run) and sets up benchmarks/.peer-venv (ONNX Runtime,
# PyTorch; outside the project's lock) through benchmarks/peer/setup.sh.
bench: setup
	$(PY) benchmarks/beam_modes.py --data-dir data/sample
	$(PY) benchmarks/evaluate_tflite.py
	bash benchmarks/peer/setup.sh
	$(PY) benchmarks/peer_benchmark.py

# Then each question at its own length: the pushed model.tflite in LiteRT (smallest signature that
# holds each window) against the same file at 384 and ONNX Runtime int8 at each question's length,
# on the bundled eval split and, with SQUAD_FILE, on held-out articles of it (--articles 418:428).
bench-peer: setup
	bash benchmarks/peer/setup.sh
	$(PY) benchmarks/peer_benchmark.py $(BENCH_ARGS)
	$(PY) benchmarks/question_latency.py $(if $(SQUAD_FILE),--squad-file "$(SQUAD_FILE)") $(LATENCY_ARGS)

# Training throughput against transformers + PyTorch (padded, and grouped by length) on the same
# checkpoint and windows; peak memory per batch shape. Figures in benchmarks/RESULTS.md.
# Scaling on paper: compute per window by length bucket, gradient bytes, a 2-process loopback
# all-reduce, and the expected windows/s for 1 to 32 workers (docs/scaling.md).
bench-scaling: setup
	$(PY) benchmarks/scaling.py $(BENCH_ARGS)

bench-train: setup
	bash benchmarks/peer/setup.sh
	$(PY) benchmarks/training_peer.py $(BENCH_ARGS)
	$(PY) benchmarks/training_memory.py

lint: setup
	$(VENV)/bin/ruff check .

# Re-resolve requirements.lock after editing requirements.in or overrides.txt.
lock:
	uv pip compile --quiet --python-version 3.10 --python-platform x86_64-manylinux_2_36 --generate-hashes \
	  requirements.in --override overrides.txt -o requirements.lock

clean:
	rm -rf runs

# The image the Kubeflow tasks run in (Dockerfile: scripts/setup.sh with requirements.lock inside it),
# with the first container engine that runs here: docker, else podman.
IMAGE ?= bertqa-tfx:latest
image:
	@engine=""; for e in docker podman; do \
	  if command -v $$e >/dev/null 2>&1 && $$e info >/dev/null 2>&1; then engine=$$e; break; fi; done; \
	if [ -z "$$engine" ]; then \
	  echo "make image: no container engine runs on this machine (docker or podman, with its daemon or service" \
	       "running); build on one that has it: docker build -t $(IMAGE) ." >&2; exit 1; fi; \
	echo "make image: $$engine build -t $(IMAGE) ."; $$engine build -t $(IMAGE) .
