"""A tiny training with and without AutoGraph converting tf-keras's own code (bertqa/model/modeling.py).

    .venv/bin/python benchmarks/autograph_tf_keras.py [--steps 120] [--repeats 2]

Each run is a fresh Python process (AutoGraph caches what it converted): build the tiny_random
model and train it on the windows of the bundled sample's first questions, once with the
project's rule that AutoGraph leaves `tf_keras` alone and once with the rule removed, as
tf-keras ran before it. Prints each run's seconds (building the model, the whole training) and
final loss, and the ratio of the medians; figures in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def one_run(mode: str, steps: int, questions: int) -> dict:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, ROOT)
    import tensorflow as tf
    from tensorflow.python.autograph.core import config

    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import window_to_tf_example
    from bertqa.model import evaluation, model_spec, modeling, training  # noqa: F401 (modeling adds the rule)

    if mode == "convert":  # tf-keras as AutoGraph treats it without the project's rule
        config.CONVERSION_RULES = tuple(rule for rule in config.CONVERSION_RULES if not rule.matches("tf_keras"))
    spec = model_spec.get("tiny_random")
    with open(os.path.join(ROOT, "data", "sample", "train.json")) as f:
        document = json.load(f)
    document["data"] = document["data"][:2]
    with tempfile.TemporaryDirectory() as tmp:
        squad = os.path.join(tmp, "train.json")
        with open(squad, "w") as f:
            json.dump(document, f)
        _, windows = evaluation.squad_file_windows(squad, TokenizerConfig(spec.resolved_vocab_path(), True),
                                                   spec.window_config(), is_training=True)
        records = os.path.join(tmp, "windows.gz")
        with tf.io.TFRecordWriter(records, options="GZIP") as writer:
            for window in windows[:questions]:
                writer.write(window_to_tf_example(window).SerializeToString())
        training.keras.utils.set_random_seed(training.DEFAULT_SEED)
        started = time.perf_counter()
        model = training.build_model(spec)
        built = time.perf_counter()
        history = training.train(model, [records], training.train_config(spec, 16, steps))
        done = time.perf_counter()
    return {"mode": mode, "build_seconds": built - started, "train_seconds": done - built,
            "final_loss": float(history.history["loss"][-1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=("skip", "convert"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.steps, args.windows)))
        return 0
    results = {"skip": [], "convert": []}
    for _ in range(args.repeats):
        for mode in results:  # interleaved, so both see the same machine load
            out = subprocess.run([sys.executable, __file__, "--one", mode, "--steps", str(args.steps),
                                  "--windows", str(args.windows)], capture_output=True, text=True, check=True,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[mode].append(result)
            print(f"{mode:8s} build {result['build_seconds']:5.1f} s  train {result['train_seconds']:5.1f} s  "
                  f"final loss {result['final_loss']:.6f}")
    totals = {mode: statistics.median(r["build_seconds"] + r["train_seconds"] for r in runs)
              for mode, runs in results.items()}
    print(f"median build + train: tf-keras left alone {totals['skip']:.1f} s, converted {totals['convert']:.1f} s, "
          f"ratio {totals['skip'] / totals['convert']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
