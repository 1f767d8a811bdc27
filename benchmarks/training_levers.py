"""The trainer's speed levers, one at a time: dropout's random draw, bf16, XLA, micro-batch size.

    .venv/bin/python benchmarks/training_levers.py ops      # the random draws of one attention tensor
    .venv/bin/python benchmarks/training_levers.py steps    # windows/s of training steps per setting
    .venv/bin/python benchmarks/training_levers.py threads --repeat 3   # TensorFlow's thread settings
    .venv/bin/python benchmarks/training_levers.py matmuls  # float32 against bfloat16 matmuls, by length
    .venv/bin/python benchmarks/training_levers.py onednn --repeat 2  # oneDNN's kernels against Eigen's, by length
    .venv/bin/python benchmarks/training_levers.py frozen-embeddings  # the word-embedding matrix frozen or trained
    .venv/bin/python benchmarks/training_levers.py fit-end --repeat 5   # fit()'s wait after its last step
    .venv/bin/python benchmarks/training_levers.py profile --length 192  # where a step's time goes, by op type
    TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python benchmarks/training_levers.py profile --matmul-dtype float32

`ops` times, for one (32, 12, 384, 384) float32 tensor, the draws a dropout mask can come
from (TensorFlow's stateful RandomUniform, which tf-keras's Dropout uses; the stateless
Philox draw that bertqa.model.modeling.Dropout uses; a tf.random.Generator) against the softmax
beside them. `steps` starts a fresh process per setting (default spec, one synthetic batch
repeated, 2 warm-up steps), and prints windows/s and how many cores the process kept busy:
windows/s are timed from the end of the first timed step to the end of the last, by a Keras
callback. `threads` does the same for TensorFlow's thread settings at 128 tokens, `matmuls`
for the trainer's matmul dtypes at 128, 256 and 384 tokens, `onednn` for TF_ENABLE_ONEDNN_OPTS=1 (what the
Makefile and the entry points set) against 0 (TensorFlow's default on CPUs without AVX512-VNNI) at 128, 192
and 384 tokens (float32 matmuls, no dropout: `make run`'s recipe on such a CPU); `frozen-embeddings` the same
recipe with the word-embedding matrix (over half the default spec's weights) frozen or trained. `fit-end` trains on the
trainer's own input pipeline (windows written to a scratch file) with tf.data's autotuning
off (the trainer's setting) and on, and shows how long fit() took to return after its last
step: with autotuning on it waited for the autotuning thread (benchmarks/RESULTS.md).
`profile` traces two training steps of the default spec (no dropout, bfloat16 matmuls unless
`--matmul-dtype float32`, whole
batches of 32 synthetic windows) with tf.profiler, unfused and XLA-compiled, and sums the host's
TensorFlow op events by op type (a fused XLA step shows as few cluster events).
Nothing else should be running; compare figures from one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# (label, length, batch, steps, settings)
THREAD_SETTINGS = (
    ("TensorFlow's default threads", 128, 32, 12, {}),
    ("TF_NUM_INTEROP_THREADS=1", 128, 32, 12, {"env": {"TF_NUM_INTEROP_THREADS": "1"}}),
    ("TF_ENABLE_ONEDNN_OPTS=0", 128, 32, 12, {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}}),
    ("TF_NUM_INTRAOP_THREADS=2", 128, 32, 12, {"env": {"TF_NUM_INTRAOP_THREADS": "2"}}),
)
ONEDNN_SETTINGS = tuple(
    (f"TF_ENABLE_ONEDNN_OPTS={flag}", length, 32, 4,
     {"env": {"TF_ENABLE_ONEDNN_OPTS": flag}, "matmul_dtype": "float32", "dropout": 0.0})
    for length in (128, 192, 384) for flag in ("1", "0"))
FROZEN_EMBEDDING_SETTINGS = tuple(
    (label, length, 32, 4, {"matmul_dtype": "float32", "dropout": 0.0, "freeze_word_embeddings": frozen})
    for length in (128, 192)
    for label, frozen in (("word embeddings trained", False), ("word embeddings frozen", True)))
FIT_END_SETTINGS = (
    ("the trainer's dataset (autotuning off)", 128, 32, 4, {"window_file": True}),
    ("the same with tf.data autotuning on", 128, 32, 4, {"window_file": True, "autotune": True}),
)
MATMUL_SETTINGS = tuple(
    (f"{dtype} matmuls", length, 32, 5, {"matmul_dtype": dtype})
    for length in (128, 256, 384) for dtype in ("float32", "bfloat16"))
STEP_SETTINGS = (
    ("dropout 0.1 (the spec), float32", 384, 32, 3, {}),
    ("dropout off, float32", 384, 32, 3, {"dropout": 0.0}),
    ("micro-batches of 8, float32", 384, 32, 3, {"attention_budget": 8 * 384 * 384}),
    ("mixed_bfloat16", 384, 32, 3, {"policy": "mixed_bfloat16"}),
    ("dropout 0.1 (the spec), float32", 192, 32, 6, {}),
    ("mixed_bfloat16", 192, 32, 6, {"policy": "mixed_bfloat16"}),
    ("XLA (jit_compile)", 192, 32, 6, {"jit_compile": True}),
)


def time_ops() -> None:
    import tensorflow as tf

    shape = [32, 12, 384, 384]
    x = tf.random.uniform(shape)
    generator = tf.random.Generator.from_seed(3)
    from bertqa.model.modeling import Dropout, DropoutSeeds

    dropout = Dropout(0.1, DropoutSeeds(), stream=0)
    draws = {
        "tf.random.uniform (stateful RandomUniform; tf-keras Dropout)": lambda x: tf.random.uniform(shape),
        "tf.nn.dropout (stateful)": lambda x: tf.nn.dropout(x, 0.1),
        "tf.random.stateless_uniform (its float draw alone)": lambda x: tf.random.stateless_uniform(shape, [1, 2]),
        "tf.random.Generator.uniform": lambda x: generator.uniform(shape),
        "tf.nn.softmax (for scale)": tf.nn.softmax,
        "dropout 0.1, a float32 draw per element (bertqa.model.modeling.Dropout before)":
            lambda x: tf.where(tf.random.stateless_uniform(shape, [1, 2]) >= 0.1, x * (1 / 0.9), tf.zeros_like(x)),
        "dropout 0.1, 16 random bits per element (bertqa.model.modeling.Dropout)": lambda x: dropout(x, training=True),
    }
    print("| op on a (32, 12, 384, 384) float32 tensor | ms (median of 5) |\n|---|---|")
    for label, op in draws.items():
        function = tf.function(op)
        function(x)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            function(x).numpy()
            times.append(time.perf_counter() - started)
        print(f"| {label} | {1000 * sorted(times)[2]:.0f} |", flush=True)


def one_setting(length: int, batch: int, steps: int, settings: dict) -> dict:
    import tensorflow as tf
    import tf_keras as keras

    from bertqa.model import model_spec, training

    StepMarks = _step_marks_class()  # noqa: N806

    keras.mixed_precision.set_global_policy(settings.get("policy", "float32"))
    overrides = {"dropout_rate": settings["dropout"]} if "dropout" in settings else {}
    spec = model_spec.get("minilm_offline", **overrides)
    model = training.build_model(spec)
    if settings.get("freeze_word_embeddings"):  # no gradient for, and no AdamW update of, the 30,522 x 384 matrix
        model.get_layer("encoder").word_embeddings.trainable = False
    budget = settings.get("attention_budget", training.TrainConfig.attention_budget)  # the default: micro-batches
    config = training.train_config(spec, batch, 100, attention_budget=budget,
                                   matmul_dtype=settings.get("matmul_dtype", "float32"))
    training.compile_for_training(model, config)
    if settings.get("jit_compile"):
        model.jit_compile = True
    ids = tf.random.Generator.from_seed(1).uniform([batch, length], 1000, 30000, tf.int32)
    features = {"input_word_ids": ids, "input_mask": tf.ones_like(ids), "input_type_ids": tf.zeros_like(ids)}
    labels = {"start_logits": tf.fill([batch], 5), "end_logits": tf.fill([batch], 9)}
    dataset = tf.data.Dataset.from_tensors((features, labels)).repeat()
    if settings.get("window_file"):  # the trainer's own input pipeline over written windows
        dataset = training.bucketed_window_dataset(settings["window_file"], batch, length, repeat=True)
        if settings.get("autotune"):
            options = tf.data.Options()
            options.autotune.enabled = True
            dataset = dataset.with_options(options)
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    marks = StepMarks()
    cpu = time.process_time()
    model.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[marks])
    returned = time.perf_counter()
    # Timed from the end of the first step to the end of the last: what fit() does after its
    # last step (deleting its data iterator) is not training (see the fit-end mode).
    wall = marks.step_ends[-1] - marks.step_ends[0]
    # The fewest CPUs any thread of the process may run on: a thread pinned to one CPU (an
    # affinity inherited at thread creation) would slow it.
    narrowest = min(len(os.sched_getaffinity(int(task))) for task in os.listdir("/proc/self/task"))
    return {"windows_per_second": steps * batch / wall,
            "busy_cores": (time.process_time() - cpu) / (returned - marks.started),
            "threads": len(os.listdir("/proc/self/task")), "narrowest_affinity": narrowest,
            "fit_returned_after_last_step": returned - marks.step_ends[-1]}


def profile_step(length: int, xla: bool, matmul_dtype: str = "bfloat16") -> None:
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from bertqa.model import model_spec, training

    batch = 32
    spec = model_spec.get("minilm_offline", dropout_rate=0.0)
    model = training.build_model(spec)
    training.compile_for_training(model, training.train_config(spec, batch, 100, attention_budget=None,
                                                               matmul_dtype=matmul_dtype, xla=xla))
    ids = tf.random.Generator.from_seed(1).uniform([batch, length], 1000, 30000, tf.int32)
    features = {"input_word_ids": ids, "input_mask": tf.ones_like(ids), "input_type_ids": tf.zeros_like(ids)}
    labels = {"start_logits": tf.fill([batch], 5), "end_logits": tf.fill([batch], 9)}
    dataset = tf.data.Dataset.from_tensors((features, labels)).repeat()
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # traced and compiled
    StepMarks = _step_marks_class()  # noqa: N806
    marks = StepMarks()
    model.fit(dataset, steps_per_epoch=5, epochs=1, verbose=0, callbacks=[marks])
    speed = 4 * batch / (marks.step_ends[-1] - marks.step_ends[0])
    with tempfile.TemporaryDirectory() as log_dir:
        tf.profiler.experimental.start(log_dir)
        model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    by_type = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads: one event per op run
                continue
            for event in line.events:
                op_type = plane.event_metadata[event.metadata_id].name.split(":")[-1]
                if op_type != "Process":  # the executor's whole-graph events, which hold the ops
                    by_type[op_type] += event.duration_ps
    total = sum(by_type.values())
    print(f"{'XLA' if xla else 'unfused'}, {length} tokens: {speed:.2f} windows/s; op time of 2 steps "
          f"{total / 1e9:.0f} ms\n| op type | ms | share |\n|---|---|---|")
    for op_type, picoseconds in by_type.most_common(12):
        print(f"| {op_type} | {picoseconds / 1e9:.0f} | {100 * picoseconds / total:.1f}% |")


def _step_marks_class():
    import tf_keras as keras

    class StepMarks(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started, self.step_ends = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            self.step_ends.append(time.perf_counter())

    return StepMarks


def write_windows(path: str, count: int, length: int) -> None:
    import tensorflow as tf

    from bertqa.data.windowing import Window, window_to_tf_example

    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(count):
            ids = (101, *(1000 + (i * 7 + j) % 20000 for j in range(length - 2)), 102)
            window = Window(unique_id=i, example_id=f"q{i}", window_index=0, input_word_ids=ids,
                            input_mask=(1,) * length, input_type_ids=(0,) * length, start_position=5,
                            end_position=9, token_char_starts=(-1,) * length, token_char_ends=(-1,) * length,
                            token_is_max_context=(1,) * length)
            writer.write(window_to_tf_example(window).SerializeToString())


def time_steps(settings_table, repeat: int = 1) -> None:
    print("| setting | tokens | windows/s | busy cores | threads | fewest CPUs a thread may use | "
          "fit() returned after its last step (s) |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeat):
            for row in settings_table:
                time_setting(*row, scratch=scratch)


def time_setting(label, length, batch, steps, settings, scratch: str) -> None:
    env = {**os.environ, **settings.get("env", {})}
    if settings.get("window_file") is True:
        path = os.path.join(scratch, f"windows-{length}.gz")
        if not os.path.exists(path):
            write_windows(path, batch * (steps + 3), length)
        settings = {**settings, "window_file": path}
    done = subprocess.run([sys.executable, __file__, "one", json.dumps([length, batch, steps, settings])],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        print(f"| {label} | {length} | failed (exit {done.returncode}): {done.stderr.strip()[-300:]!r} | |")
        return
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"| {label} | {length} | {result['windows_per_second']:.2f} | {result['busy_cores']:.2f} | "
          f"{result['threads']} | {result['narrowest_affinity']} | {result['fit_returned_after_last_step']:.2f} |",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("ops", "steps", "threads", "matmuls", "onednn", "frozen-embeddings",
                                         "fit-end", "profile", "profile-one", "one"))
    parser.add_argument("--length", type=int, default=192, help="profile: the windows' length in tokens")
    parser.add_argument("--matmul-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="profile: the dense layers' matmuls (float32 where the CPU has no native bfloat16)")
    parser.add_argument("--repeat", type=int, default=1, help="steps / threads: run every setting this often")
    parser.add_argument("--only", default="", help="steps / threads: only settings whose label has this (any case)")
    parser.add_argument("setting", nargs="?", help=argparse.SUPPRESS)  # `one`: a JSON list, for the subprocess
    parser.add_argument("xla_flag", nargs="?", help=argparse.SUPPRESS)  # `profile-one`: 0 or 1
    args = parser.parse_args()
    if args.what == "ops":
        time_ops()
    elif args.what == "profile":
        for xla in (False, True):  # one process each: a fresh start for both
            subprocess.run([sys.executable, __file__, "profile-one", str(args.length), str(int(xla)),
                            f"--matmul-dtype={args.matmul_dtype}"], check=True)
    elif args.what == "steps":
        time_steps([row for row in STEP_SETTINGS if args.only.lower() in row[0].lower()], args.repeat)
    elif args.what in ("threads", "matmuls", "onednn", "frozen-embeddings", "fit-end"):
        table = {"threads": THREAD_SETTINGS, "matmuls": MATMUL_SETTINGS, "onednn": ONEDNN_SETTINGS,
                 "frozen-embeddings": FROZEN_EMBEDDING_SETTINGS, "fit-end": FIT_END_SETTINGS}[args.what]
        time_steps([row for row in table if args.only.lower() in row[0].lower()], args.repeat)
    elif args.what == "profile-one":
        profile_step(int(args.setting), bool(int(args.xla_flag)), args.matmul_dtype)
    else:
        print(json.dumps(one_setting(*json.loads(args.setting))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
