"""Scaling on paper: expected training windows/s and time to train full SQuAD on 1 to 32 workers,
from what is measured here.

    .venv/bin/python benchmarks/scaling.py [--squad-file SQUAD_JSON] [--json OUT]

Measured, one after the other (nothing else should be running):
  1. compute: the default spec's training step (the trainer's own settings: micro-batches,
     matmul dtype "auto", dropout) on a batch of 32 synthetic windows at each length bucket, in
     a fresh process per bucket (benchmarks/training_levers.py one), as seconds per window;
  2. the bucket mix and the window count: the project's own windowing (the spec's 384/128) of
     --squad-file (full SQuAD v1.1 train for the table; default: the bundled sample, whose
     count is then not SQuAD's and the table's hours are for the sample);
  3. the gradient bytes per step: the default model's trainable weights in float32 (the
     micro-batched step sums dense gradients, the embedding's included, and all-reduces them);
  4. the all-reduce: two processes on 127.0.0.1 under MultiWorkerMirroredStrategy (as
     `local_runner.py --train-workers 2` runs the Trainer), the median time to all-reduce that
     many float32 bytes, and a 4-byte tensor for the per-round latency.

The model (printed with the table): every worker is a machine like this one and trains a
per-worker batch of 32 (the global batch grows with the workers: weak scaling), on its slice
of the same global batch, so all workers' slices have the same bucket and none waits for a
straggler of another length. A step takes

    T(N) = 32 * c + 2 (N - 1) / N * G / B + 2 (N - 1) * a

with c the mean seconds per window over the bucket mix, G the gradient bytes, B the link's
bandwidth and a the latency of one ring round (half the measured 2-process 4-byte
all-reduce): ring all-reduce's cost (each worker sends and receives 2 (N - 1) / N of the
gradient in 2 (N - 1) rounds), with no overlap of communication and compute (TensorFlow's
MultiWorkerMirroredStrategy all-reduces after the backward pass). windows/s = 32 N / T(N).
What it leaves out: a global batch of 32 N wants its learning rate re-tuned (more windows per
step, fewer steps); input reading (each worker parses every record: milliseconds per batch).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

BUCKETS = (64, 128, 192, 256, 320, 384)
PER_WORKER_BATCH = 32
WORKERS = (1, 2, 4, 8, 16, 32)
GBITS = (10, 25, 100)
EPOCHS = 2  # the default spec's
SAMPLE = os.path.join(ROOT, "data", "sample", "train.json")


def measure_compute(steps: int = 4) -> dict[int, float]:
    """Seconds per window of a training step at each bucket length, each in a fresh process."""
    seconds = {}
    for length in BUCKETS:
        settings = {"matmul_dtype": "auto"}
        done = subprocess.run([sys.executable, os.path.join(HERE, "training_levers.py"), "one",
                               json.dumps([length, PER_WORKER_BATCH, steps, settings])],
                              capture_output=True, text=True, check=True)
        rate = json.loads(done.stdout.strip().splitlines()[-1])["windows_per_second"]
        seconds[length] = 1.0 / rate
        print(f"  {length} tokens: {rate:.2f} windows/s", flush=True)
    return seconds


def bucket_mix(squad_file: str) -> dict[int, float]:
    """Share of a SQuAD file's training windows in each length bucket (spec 384/128), and their count."""
    from bertqa.data import squad_io, windowing
    from bertqa.data.tokenization import WordPieceTokenizer
    from bertqa.model import model_spec

    spec = model_spec.get(model_spec.DEFAULT_SPEC)
    examples, _ = squad_io.read_squad_file(squad_file)
    windows, _ = windowing.make_windows(examples, WordPieceTokenizer(spec.tokenizer_config()),
                                        spec.window_config(), is_training=True)
    counts = dict.fromkeys(BUCKETS, 0)
    for window in windows:
        counts[min(b for b in BUCKETS if b >= len(window.input_word_ids))] += 1
    return {b: counts[b] / len(windows) for b in BUCKETS} | {"windows": len(windows)}


def gradient_bytes() -> int:
    from bertqa.model import model_spec, training

    model = training.build_model(model_spec.get(model_spec.DEFAULT_SPEC))
    return 4 * sum(int(v.shape.num_elements()) for v in model.trainable_variables)


def measure_all_reduce(num_bytes: int, repeats: int = 10) -> float:
    """Median seconds of an all-reduce of num_bytes of float32 between two processes on loopback."""
    from bertqa.model import distribution
    from components.trainer.child_process import free_loopback_ports

    ports = free_loopback_ports(2)
    processes = []
    for index in range(2):
        env = dict(os.environ, **{distribution.TF_CONFIG_ENV: distribution.local_cluster_config(ports, index)},
                   PYTHONPATH=ROOT)
        processes.append(subprocess.Popen([sys.executable, __file__, "--all-reduce-task", str(num_bytes),
                                           str(repeats)], env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    if any(p.returncode for p in processes):
        raise RuntimeError(f"an all-reduce task failed: {[p.returncode for p in processes]}")
    return json.loads(outputs[0].strip().splitlines()[-1])["median_seconds"]


def all_reduce_task(num_bytes: int, repeats: int) -> None:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    values = tf.ones([max(num_bytes // 4, 1)], tf.float32)

    @tf.function
    def all_reduce():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", values))

    for _ in range(2):
        all_reduce()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = all_reduce()
        strategy.experimental_local_results(result)[0].numpy()
        times.append(time.perf_counter() - started)
    print(json.dumps({"median_seconds": statistics.median(times)}))


def step_seconds(workers: int, seconds_per_window: float, grad_bytes: int, gbits: float, latency: float) -> float:
    bandwidth = gbits * 1e9 / 8
    communication = 0.0
    if workers > 1:
        communication = 2 * (workers - 1) / workers * grad_bytes / bandwidth + 2 * (workers - 1) * latency
    return PER_WORKER_BATCH * seconds_per_window + communication


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad-file", default=SAMPLE,
                        help="the training set whose windows are counted (default: the bundled sample)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per bucket")
    parser.add_argument("--json", default=None, help="also write the measured inputs and the table here")
    parser.add_argument("--all-reduce-task", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.all_reduce_task:
        all_reduce_task(*args.all_reduce_task)
        return 0

    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print("compute (default spec, batch 32, the trainer's settings):", flush=True)
    compute = measure_compute(args.steps)
    mix = bucket_mix(args.squad_file)
    squad_windows = mix["windows"]
    mean_seconds = sum(mix[b] * compute[b] for b in BUCKETS)
    grad = gradient_bytes()
    loopback = measure_all_reduce(grad)
    latency = measure_all_reduce(4) / 2
    print(f"bucket mix of the {squad_windows} training windows of {args.squad_file}: "
          + ", ".join(f"{b}: {100 * mix[b]:.1f}%" for b in BUCKETS))
    print(f"mean seconds per window c = {mean_seconds:.4f} ({1 / mean_seconds:.2f} windows/s on one worker)")
    print(f"gradient G = {grad / 1e6:.1f} MB per step; 2-process loopback all-reduce of G: {loopback:.3f} s "
          f"({2 * 0.5 * grad / loopback * 8 / 1e9:.2f} Gb/s effective); ring round latency a = {latency * 1e3:.2f} ms")
    rows = []
    header = "| workers | " + " | ".join(f"windows/s at {g} Gb/s | {EPOCHS} epochs at {g} Gb/s"
                                           for g in GBITS)
    print("\n" + header + " |\n|---|" + "---|---|" * len(GBITS))
    for n in WORKERS:
        cells = []
        for g in GBITS:
            rate = PER_WORKER_BATCH * n / step_seconds(n, mean_seconds, grad, g, latency)
            hours = EPOCHS * squad_windows / rate / 3600
            cells.append((rate, hours))
            rows.append({"workers": n, "gbits": g, "windows_per_second": rate, "hours": hours})
        print(f"| {n} | " + " | ".join(f"{r:.1f} | {h:.2f} h" for r, h in cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds_per_window": compute, "bucket_mix": mix, "mean_seconds_per_window": mean_seconds,
                       "gradient_bytes": grad, "loopback_all_reduce_seconds": loopback,
                       "ring_round_latency_seconds": latency, "squad_file": args.squad_file,
                       "squad_windows": squad_windows,
                       "table": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
