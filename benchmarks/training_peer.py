"""Training throughput: this project's trainer against Hugging Face transformers + PyTorch, in one run.

    .venv/bin/python benchmarks/training_peer.py [--windows 2560] [--steps 60]
    make bench-train

Both fine-tune the default spec's pretrained checkpoint (all-MiniLM-L6-v2) with a fresh span
head, AdamW, batch 32, on the same training windows of the bundled sample (a seeded sample of
--windows of them, windowed as BertQATransform windows them), one after the other on the same
machine (nothing else should be running):

1. this project: bertqa.model.training.train (length-bucketed batches, tf-keras) for --steps steps,
   once with float32 and once with bfloat16 dense-layer matmuls (TrainConfig.matmul_dtype);
   windows/s over the steps after the first 20, as the issue defines steady state (the first
   steps trace one graph per length bucket);
2. the peer, benchmarks/peer/train_peer.py in benchmarks/.peer-venv (set up by
   benchmarks/peer/setup.sh, outside the project's lock): transformers' BertForQuestionAnswering,
   padded to 384, grouped by length, and grouped by length under bfloat16 autocast.

Prints a markdown table with the ratio (this project's windows/s over the peer's).
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
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEER_PYTHON = os.path.join(HERE, ".peer-venv", "bin", "python")
STEADY_AFTER = 20
MATMUL_DTYPES = ("float32", "bfloat16")


def sample_windows(count: int, seed: int = 42):
    from bertqa.model import evaluation, model_spec

    spec = model_spec.get("minilm_offline")
    _, windows = evaluation.squad_file_windows(os.path.join(REPO, "data", "sample", "train.json"),
                                               spec.tokenizer_config(), spec.window_config(), is_training=True)
    chosen = np.random.default_rng(seed).permutation(len(windows))[:count]
    return spec, [windows[i] for i in chosen]


def write_npz(windows, seq_len: int, path: str) -> None:
    def padded(name):
        array = np.zeros((len(windows), seq_len), np.int32)
        for row, window in enumerate(windows):
            values = getattr(window, name)
            array[row, :len(values)] = values
        return array

    np.savez(path, ids=padded("input_word_ids"), mask=padded("input_mask"), type_ids=padded("input_type_ids"),
             start=np.array([w.start_position for w in windows], np.int32),
             end=np.array([w.end_position for w in windows], np.int32))


def project_windows_per_second(spec, windows, steps: int, batch_size: int, scratch: str,
                               matmul_dtype: str = "auto") -> float:
    import tensorflow as tf

    from bertqa.data.windowing import window_to_tf_example
    from bertqa.model import training

    path = os.path.join(scratch, "windows.gz")
    if not os.path.exists(path):  # written by the first call, read by both matmul dtypes
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for window in windows:
                writer.write(window_to_tf_example(window).SerializeToString())

    class StepClock(training.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == STEADY_AFTER:
                self.started = time.perf_counter()
            self.ended = time.perf_counter()

    training.keras.utils.set_random_seed(training.DEFAULT_SEED)  # Python's too (initializers)
    model = training.build_model(spec)
    clock = StepClock()
    training.train(model, [path], training.train_config(spec, batch_size, steps, matmul_dtype=matmul_dtype),
                   callbacks=[clock])
    return (steps - STEADY_AFTER) * batch_size / (clock.ended - clock.started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=2560)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--peer-steps", default="padded=6,grouped=20,grouped-bf16=20")
    parser.add_argument("--json", default=os.path.join(HERE, "training_peer_results.json"))
    args = parser.parse_args()
    if not os.access(PEER_PYTHON, os.X_OK):
        subprocess.run(["bash", os.path.join(HERE, "peer", "setup.sh")], check=True)
    from bertqa.model import training

    spec, windows = sample_windows(args.windows)
    with tempfile.TemporaryDirectory() as scratch:
        ours = {}
        for dtype in MATMUL_DTYPES:
            ours[dtype] = project_windows_per_second(spec, windows, args.steps, args.batch_size, scratch, dtype)
            print(f"this project, {dtype} matmuls: {ours[dtype]:.2f} windows/s (steps {STEADY_AFTER + 1}-"
                  f"{args.steps})", flush=True)
        npz = os.path.join(scratch, "windows.npz")
        write_npz(windows, spec.seq_len, npz)
        out = os.path.join(scratch, "peer.json")
        subprocess.run([PEER_PYTHON, os.path.join(HERE, "peer", "train_peer.py"), "--checkpoint",
                        spec.checkpoint_dir, "--windows", npz, "--out", out, "--batch-size", str(args.batch_size),
                        "--steps", args.peer_steps], check=True)
        with open(out) as f:
            peer = json.load(f)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; batch {args.batch_size}, "
          f"{len(windows)} sample windows; torch {peer['torch']}, {peer['threads']} threads")
    default = training.resolve_matmul_dtype("auto")
    print(f"this machine's default (matmul_dtype auto): {default}")
    print("| trainer | windows/s | this project's default / it | this project, float32 / it |\n|---|---|---|---|")
    for dtype in MATMUL_DTYPES:
        print(f"| this project (tf-keras, length-bucketed), {dtype} matmuls | {ours[dtype]:.2f} | | |")
    for mode, label in (("padded", "transformers + PyTorch, padded to 384"),
                        ("grouped", "transformers + PyTorch, grouped by length"),
                        ("grouped-bf16", "transformers + PyTorch, grouped by length, bfloat16 autocast")):
        if mode in peer:
            rate = peer[mode]["windows_per_second"]
            print(f"| {label} | {rate:.2f} | {ours[default] / rate:.2f}x | {ours['float32'] / rate:.2f}x |")
    with open(args.json, "w") as f:
        json.dump({"project_windows_per_second": ours, "default_matmul_dtype": default, "peer": peer,
                   "windows": len(windows)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
