"""What holds the trainer's memory: peak resident set of one training step per batch shape.

    .venv/bin/python benchmarks/training_memory.py [--spec minilm_offline] [--batch-size 32]

Training batches are padded to their length bucket (bertqa.model.training, buckets of 64 tokens),
so the peak of a run is set by its longest bucket, even when only a few batches reach it.
For each bucket length this starts a fresh process (peak RSS only grows within a process),
builds the spec's model, and fits three steps on one synthetic batch of that shape; it prints
the peak resident set of the process: as the trainer runs by default (batches whose windows x
tokens^2 exceed TrainConfig.attention_budget run as sequential micro-batches), with whole
batches, and with whole batches and dropout off (attention dropout keeps extra (batch, heads,
seq, seq) tensors for the backward pass).
It also prints how many of the bundled sample's training windows fall in each bucket.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

LENGTHS = (64, 128, 192, 256, 320, 384)

_ONE_SHAPE = """
import json, os, resource, sys
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1"); os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
from bertqa.model import model_spec, training
name, length, batch, dropout, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
spec = model_spec.get(name, **({} if dropout == "spec" else {"dropout_rate": float(dropout)}))
model = training.build_model(spec)
overrides = {} if budget == "default" else {"attention_budget": None}
training.compile_for_training(model, training.train_config(spec, batch, 10, **overrides))
features = {name: tf.ones([batch, length], tf.int32) for name in ("input_word_ids", "input_mask", "input_type_ids")}
labels = {"start_logits": tf.zeros([batch], tf.int32), "end_logits": tf.zeros([batch], tf.int32)}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model.fit(tf.data.Dataset.from_tensors((features, labels)).repeat(3), epochs=1, verbose=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_gb": before / 1e6, "peak_gb": after / 1e6}))
"""


def peak_of_one_shape(spec: str, length: int, batch_size: int, dropout: str, budget: str = "default") -> dict:
    done = subprocess.run([sys.executable, "-c", _ONE_SHAPE, spec, str(length), str(batch_size), dropout, budget],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sample_buckets(bucket_width: int = 64) -> dict[int, int]:
    """Training windows of the bundled sample per bucket length (windowed as BertQATransform does)."""
    from bertqa.model import evaluation, model_spec

    spec = model_spec.get("minilm_offline")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _, windows = evaluation.squad_file_windows(os.path.join(here, "data", "sample", "train.json"),
                                               spec.tokenizer_config(), spec.window_config(), is_training=True)
    counts: dict[int, int] = {}
    for window in windows:
        bucket = min(((len(window.input_word_ids) - 1) // bucket_width + 1) * bucket_width, spec.seq_len)
        counts[bucket] = counts.get(bucket, 0) + 1
    return dict(sorted(counts.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="minilm_offline")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; spec {args.spec}, batch {args.batch_size}")
    try:
        buckets = sample_buckets()
    except Exception as error:  # noqa: BLE001 (the table below does not need it)
        print(f"(bucket counts of the sample not available: {error})")
        buckets = {}
    print("| bucket (tokens) | sample training windows | peak RSS, micro-batched (the default) (GB) "
          "| peak RSS, whole batches (GB) | peak RSS, whole batches, dropout off (GB) |")
    print("|---|---|---|---|---|")
    baseline = None
    for length in LENGTHS:
        micro = peak_of_one_shape(args.spec, length, args.batch_size, "spec")
        whole = peak_of_one_shape(args.spec, length, args.batch_size, "spec", budget="none")
        without = peak_of_one_shape(args.spec, length, args.batch_size, "0.0", budget="none")
        baseline = baseline or micro["before_gb"]
        print(f"| {length} | {buckets.get(length, 0)} | {micro['peak_gb']:.2f} | {whole['peak_gb']:.2f} "
              f"| {without['peak_gb']:.2f} |", flush=True)
    print(f"(the process before its first step, model built: {baseline:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
