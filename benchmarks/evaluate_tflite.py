"""Fast evaluate_tflite (batched, multi-threaded) against Model Maker's one-window-per-run loop, in one run.

    .venv/bin/python benchmarks/evaluate_tflite.py [--model M] [--data data/sample/eval.json] [--threads N]

--model: a .tflite, or a SavedModel directory (exported to a dynamic-range .tflite by the
TFLiteExporter's core first). Default: the newest pushed model.tflite or trainer SavedModel
under runs/; with neither, train-free: the MiniLM-initialised span model, untrained,
exported to a SavedModel and then to a dynamic-range .tflite (its metrics are near zero,
its speed is a real MiniLM's). The output says which was used.

Both paths read the same windows (bertqa.data.windowing on --data, as BertQATransform makes
them), padded to the model's input length, and score with the same bertqa.model.evaluation.score:
  baseline  Model Maker's evaluate_tflite: tf.lite.Interpreter(model_path) with its default
            threads, one window per invoke (set_tensor x3, invoke, get_tensor x2);
  fast      bertqa.on_device.scoring.evaluate_tflite: batches of --batch-size windows in one
            invoke (the interpreter resized to [batch, seq_len]) on --threads threads.
Prints the seconds of each, the speed ratio, both metrics and whether they are equal.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# Equal metrics: the same answers, so the same numbers up to float summation order.
METRIC_TOLERANCE = 1e-9


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a .tflite or a SavedModel directory (default: see above)")
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "runs"))
    parser.add_argument("--data", default=os.path.join(REPO, "data", "sample", "eval.json"))
    parser.add_argument("--threads", type=int, default=None, help="fast path threads (default: every CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="fast path windows per run (default: 8)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def newest_model(runs_dir: str) -> str | None:
    """The newest pushed model.tflite or trainer SavedModel under runs_dir, if any."""
    candidates = glob.glob(os.path.join(runs_dir, "*", "serving", "*", "model.tflite"))
    candidates += glob.glob(os.path.join(runs_dir, "*", "artifacts", "Trainer", "model", "*", "Format-Serving"))
    return max(candidates, key=os.path.getmtime, default=None)


def untrained_minilm_saved_model(directory: str) -> str:
    from bertqa.model import model_spec, serving, training

    spec = model_spec.get(model_spec.DEFAULT_SPEC)
    tokenizer = spec.tokenizer_config()
    path = os.path.join(directory, "saved_model")
    serving.export_saved_model(training.build_model(spec), tokenizer.vocab_path, tokenizer.do_lower_case,
                               spec.window_config(), path)
    return path


def resolve_model(args: argparse.Namespace, scratch: str) -> tuple[str, str]:
    """(path of the .tflite to benchmark, a sentence saying where it came from)."""
    from bertqa.on_device import conversion, task_metadata
    from components.tflite_exporter import core

    source = args.model or newest_model(args.runs_dir)
    if source is None:
        saved_model = untrained_minilm_saved_model(scratch)
        origin = "train-free: the MiniLM-initialised model, untrained, exported to a dynamic-range .tflite"
    elif source.endswith(".tflite"):
        return source, f"{source}"
    else:
        saved_model, origin = source, f"{source}, exported to a dynamic-range .tflite"
    path = os.path.join(scratch, "model.tflite")
    core.export_variant(saved_model, task_metadata.saved_model_vocab_path(saved_model), path, "dynamic",
                        conversion.TfliteExportConfig())
    return path, origin


def model_maker_logits(path: str, windows, seq_len: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Model Maker's loop: the interpreter with default threads, one window per invoke."""
    import tensorflow as tf

    from bertqa.on_device import conversion

    interpreter = tf.lite.Interpreter(model_path=path)
    signature = interpreter.get_signature_runner()
    inputs = {name: d["index"] for name, d in signature.get_input_details().items()}
    outputs = {name: d["index"] for name, d in signature.get_output_details().items()}
    del signature  # it holds views of the interpreter's tensors, which invoke() refuses
    interpreter.allocate_tensors()
    starts, ends = [], []
    for window in windows:
        for name, values in conversion.pad_window(
                {name: getattr(window, name) for name in conversion.INPUT_NAMES}, seq_len).items():
            interpreter.set_tensor(inputs[name], values)
        interpreter.invoke()
        n = len(window.input_word_ids)
        starts.append(interpreter.get_tensor(outputs["start_logits"])[0, :n].copy())
        ends.append(interpreter.get_tensor(outputs["end_logits"])[0, :n].copy())
    return starts, ends


def batching_supported(path: str, windows, seq_len: int) -> bool:
    from bertqa.model import evaluation
    from bertqa.on_device import conversion, runtime

    runner = runtime.TfliteQaRunner(path)
    pair = windows[:2]
    runner.run(*(evaluation._padded(pair, name, seq_len) for name in conversion.INPUT_NAMES))
    return bool(runner.batching_supported)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import WindowConfig
    from bertqa.model import evaluation
    from bertqa.on_device import runtime, scoring, task_metadata

    with tempfile.TemporaryDirectory() as scratch:
        path, origin = resolve_model(args, scratch)
        seq_len = runtime.TfliteQaRunner(path).seq_len
        vocab = task_metadata.unpack_vocab(path, scratch)
        examples, windows = evaluation.squad_file_windows(args.data, TokenizerConfig(vocab, True),
                                                          WindowConfig(seq_len=seq_len))
        config = evaluation.EvalConfig()
        threads = args.threads or evaluation.default_num_threads()
        batch_size = args.batch_size or scoring.DEFAULT_TFLITE_BATCH_SIZE

        started = time.perf_counter()
        baseline = evaluation.score(examples, windows, *model_maker_logits(path, windows, seq_len), config)
        baseline_seconds = time.perf_counter() - started

        started = time.perf_counter()
        fast = scoring.evaluate_tflite(path, examples, windows, config, num_threads=threads,
                                       batch_size=batch_size, show_progress=False)
        fast_seconds = time.perf_counter() - started
        batched = batching_supported(path, windows, seq_len)

    equal = baseline.metrics.keys() == fast.metrics.keys() and all(
        abs(baseline.metrics[k] - fast.metrics[k]) <= METRIC_TOLERANCE for k in baseline.metrics)
    figures = {
        "model": origin, "data": os.path.relpath(args.data, REPO), "questions": len(examples),
        "windows": len(windows), "seq_len": seq_len, "cpus": os.cpu_count(),
        "baseline_seconds": round(baseline_seconds, 2), "fast_seconds": round(fast_seconds, 2),
        "speed_ratio": round(baseline_seconds / fast_seconds, 2), "fast_threads": threads,
        "fast_batch_size": batch_size, "batching_supported": batched,
        "baseline_metrics": baseline.metrics, "fast_metrics": fast.metrics, "metrics_equal": equal,
    }
    print(json.dumps(figures, indent=2))
    if not batched:
        print("note: this .tflite cannot resize its batch (exported before resizable batches); the fast path "
              "ran it one window at a time and only its threads helped", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
