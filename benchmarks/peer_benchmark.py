"""The shipped TFLite variants against ONNX Runtime and PyTorch on the same trained weights, in one run.

    .venv/bin/python benchmarks/peer_benchmark.py [--saved-model DIR] [--data data/sample/eval.json]
    make bench      # runs this after the other benchmarks

--saved-model: a Trainer SavedModel of the in-project encoder (default: the newest under runs/).
The run, one step after the other on the same machine (nothing else should be running):

1. exports every TFLite variant from the SavedModel with the TFLiteExporter's own code
   (`components.tflite_exporter.core.export_variant`: the files a pipeline run would push);
2. scores and times each in LiteRT and in TensorFlow 2.16's interpreter (XNNPACK as each applies
   it by default), and times it in the Task Library's BertQuestionAnswerer (one question,
   tokenization and span search included), at 1 and 2 threads: the median of --runs runs of one
   [1, 384] window after --warmup runs; the --task-library-f1 variants are also scored in the Task
   Library (its tokenizer, its one window of the first 384 tokens, its span search), with the
   share of questions it answers as an app on LiteRT does (the best span widened to whole words,
   SQuAD-normalized);
3. writes the same trained weights in the Hugging Face BERT layout and runs
   benchmarks/peer/onnx_peer.py in benchmarks/.peer-venv (set up by benchmarks/peer/setup.sh,
   outside the project's lock): ONNX Runtime fp32 and dynamic int8 (per-tensor and per-channel), and PyTorch eager;
4. scores every system on the eval split with the project's post-processing and SQuAD metric,
   so a speed-up never hides an accuracy loss.

Prints a markdown table (ratio: latency over ONNX Runtime int8's at the same thread count) and
writes it with the figures to --json (default benchmarks/peer_results.json).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
PEER_PYTHON = os.path.join(HERE, ".peer-venv", "bin", "python")
PEER_INT8 = "onnxruntime int8"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", default=None)
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "runs"))
    parser.add_argument("--data", default=os.path.join(REPO, "data", "sample", "eval.json"))
    parser.add_argument("--calibration-data", default=os.path.join(REPO, "data", "sample", "train.json"),
                        help="int8 calibrates on 100 windows spread over this file, as the pipeline does")
    parser.add_argument("--variants", default="dynamic,none,float16,int8")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--task-library-f1", default="dynamic", metavar="VARIANTS",
                        help="variants also scored in the Task Library's BertQuestionAnswerer, one answer() per "
                             "question (about 0.25 s each for MiniLM), with the share of questions where its "
                             "answer equals LiteRT's ('' for none)")
    parser.add_argument("--json", default=os.path.join(HERE, "peer_results.json"))
    parser.add_argument("--keep", default=None, help="keep the exported files in this directory")
    return parser.parse_args(argv)


def newest_saved_model(runs_dir: str) -> str | None:
    candidates = glob.glob(os.path.join(runs_dir, "*", "artifacts", "Trainer", "model", "*", "Format-Serving"))
    return max(candidates, key=os.path.getmtime, default=None)


# --- the trained weights in the Hugging Face layout ------------------------------------------

def _hf_name_pairs(num_layers: int) -> list[tuple[str, str, bool]]:
    """(SavedModel variable, Hugging Face tensor, transpose): the inverse of bertqa.model.checkpoint."""
    pairs = [
        ("encoder/word_embeddings/embeddings", "bert.embeddings.word_embeddings.weight", False),
        ("encoder/position_embeddings/embeddings", "bert.embeddings.position_embeddings.weight", False),
        ("encoder/type_embeddings/embeddings", "bert.embeddings.token_type_embeddings.weight", False),
        ("encoder/embedding_norm/gamma", "bert.embeddings.LayerNorm.weight", False),
        ("encoder/embedding_norm/beta", "bert.embeddings.LayerNorm.bias", False),
        ("span_head/span_logits/kernel", "qa_outputs.weight", True),
        ("span_head/span_logits/bias", "qa_outputs.bias", False),
    ]
    dense = {"attention/query": "attention.self.query", "attention/key": "attention.self.key",
             "attention/value": "attention.self.value", "attention/output_dense": "attention.output.dense",
             "intermediate": "intermediate.dense", "output_dense": "output.dense"}
    norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
    for i in range(num_layers):
        for ours, theirs in dense.items():
            pairs.append((f"encoder/layer_{i}/{ours}/kernel", f"bert.encoder.layer.{i}.{theirs}.weight", True))
            pairs.append((f"encoder/layer_{i}/{ours}/bias", f"bert.encoder.layer.{i}.{theirs}.bias", False))
        for ours, theirs in norms.items():
            pairs.append((f"encoder/layer_{i}/{ours}/gamma", f"bert.encoder.layer.{i}.{theirs}.weight", False))
            pairs.append((f"encoder/layer_{i}/{ours}/beta", f"bert.encoder.layer.{i}.{theirs}.bias", False))
    return pairs


def write_hf_weights(saved_model_dir: str, spec_name: str, directory: str) -> None:
    """The SavedModel's weights as config.json + model.safetensors for transformers' BertForQuestionAnswering."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the serving graph's ops)
    from safetensors.numpy import save_file

    from bertqa.model import model_spec

    spec = model_spec.get(spec_name)
    if not spec.checkpoint_dir:
        raise SystemExit(f"bench: the peers rebuild the in-project BERT encoder from a checkpoint; spec "
                         f"{spec_name!r} has none (a TF Hub or random encoder): run the bench on a minilm/bert spec.")
    loaded = tf.saved_model.load(saved_model_dir)  # kept alive: the signature only references its variables
    variables = {v.name.removesuffix(":0"): v.numpy() for v in loaded.signatures["logits"].variables}
    with open(os.path.join(spec.checkpoint_dir, "config.json")) as f:
        config = json.load(f)
    pairs = _hf_name_pairs(config["num_hidden_layers"])
    missing = sorted({ours for ours, _, _ in pairs} - set(variables))
    unused = sorted(set(variables) - {ours for ours, _, _ in pairs})
    if missing or unused:
        raise SystemExit(f"bench: {saved_model_dir} is not the in-project encoder of {spec_name}: "
                         f"missing {missing[:5]}, unmatched {unused[:5]}")
    tensors = {theirs: np.ascontiguousarray(variables[ours].T if transpose else variables[ours])
               for ours, theirs, transpose in pairs}
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    config.update(architectures=["BertForQuestionAnswering"], num_labels=2)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


# --- timing ----------------------------------------------------------------------------------

def task_library_ms(path: str, context: str, question: str, threads: int, runs: int, warmup: int) -> float:
    from bertqa.on_device import task_library

    return 1000.0 * task_library.median_answer_seconds(path, context, question, threads, runs, warmup)


def interpreter_ms(path: str, window, threads: int, runs: int, warmup: int, tflite_runtime: str) -> float:
    from bertqa.on_device import conversion, runtime

    inputs = {name: np.asarray(getattr(window, name)) for name in conversion.INPUT_NAMES}
    return 1000.0 * runtime.median_latency_seconds(path, inputs, threads, runs=runs, warmup=warmup,
                                                   runtime=tflite_runtime)


# --- the run ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import WindowConfig
    from bertqa.model import evaluation
    from bertqa.on_device import conversion, runtime, scoring, task_metadata
    from components.tflite_exporter import core

    threads = [int(t) for t in args.threads.split(",")]
    saved_model = args.saved_model or newest_saved_model(args.runs_dir)
    if saved_model is None:
        raise SystemExit(f"bench: no trained SavedModel under {args.runs_dir}; run `make run` first, or pass "
                         "--saved-model.")
    summary_path = os.path.join(os.path.dirname(saved_model), "training_summary.json")
    spec_name = "minilm_offline"
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            spec_name = json.load(f).get("spec", spec_name)
    if subprocess.run(["bash", os.path.join(HERE, "peer", "setup.sh")]).returncode:
        raise SystemExit("bench: the peer environment could not be set up (benchmarks/peer/setup.sh, above).")

    vocab = task_metadata.saved_model_vocab_path(saved_model)
    config = conversion.TfliteExportConfig()
    examples, windows = evaluation.squad_file_windows(args.data, TokenizerConfig(vocab, config.do_lower_case),
                                                      WindowConfig(seq_len=config.seq_len,
                                                                   query_len=config.query_len))
    eval_config = evaluation.EvalConfig()
    first = examples[0]
    print(f"bench: {saved_model} ({spec_name}); {len(examples)} questions, {len(windows)} windows of {args.data}; "
          f"{platform.node()}, {os.cpu_count()} CPUs", file=sys.stderr)

    rows = []
    scratch_owner = None if args.keep else tempfile.TemporaryDirectory()
    scratch = args.keep or scratch_owner.name
    os.makedirs(scratch, exist_ok=True)
    saved = evaluation.evaluate_saved_model(saved_model, examples, windows, eval_config, show_progress=False)
    reference_f1 = saved.metrics["f1"]
    rows.append({"system": "SavedModel (float32, TensorFlow)", "f1": reference_f1,
                 "exact_match": saved.metrics["exact_match"]})

    for variant in args.variants.split(","):
        path = os.path.join(scratch, f"{variant}.tflite")
        started = time.perf_counter()
        representative = ()
        if variant == "int8":
            _, training_windows = evaluation.squad_file_windows(
                args.calibration_data, TokenizerConfig(vocab, config.do_lower_case),
                WindowConfig(seq_len=config.seq_len, query_len=config.query_len))
            representative = core.representative_windows(training_windows, 100)
        core.export_variant(saved_model, vocab, path, variant, config, representative=representative)
        export_s = time.perf_counter() - started
        # The same file in each runtime: LiteRT (what apps run today) and TensorFlow 2.16's interpreter
        # (what this project measured with before); the Task Library, its own runtime, once per file.
        task_library = {t: task_library_ms(path, first.context, first.question, t, args.runs, args.warmup)
                        for t in threads}
        for tflite_runtime, label in ((runtime.LITERT, "LiteRT"), (runtime.TENSORFLOW, "TF interpreter")):
            delegate = runtime.xnnpack_report(path, tflite_runtime)
            starts, ends = scoring.tflite_logits(path, windows, show_progress=False, runtime=tflite_runtime)
            scored = evaluation.score(examples, windows, starts, ends, eval_config)
            row = {"system": f"TFLite {variant}" + (" (model.tflite)" if variant == "dynamic" else "") + f", {label}",
                   "variant": variant, "runtime": tflite_runtime, "size_mb": os.path.getsize(path) / 1e6,
                   "export_s": export_s, "f1": scored.metrics["f1"], "exact_match": scored.metrics["exact_match"],
                   "xnnpack": delegate.to_json(),
                   "latency_ms": {t: interpreter_ms(path, windows[0], t, args.runs, args.warmup, tflite_runtime)
                                  for t in threads}}
            if tflite_runtime == runtime.LITERT:
                row["task_library_ms"] = task_library
                litert_answers = scoring.app_answers(examples, windows, starts, ends, eval_config)
            rows.append(row)
            print(f"bench: {row['system']}: {row['latency_ms']} ms, Task Library {task_library} ms, "
                  f"f1 {row['f1']:.2f}, {delegate.summary()}", file=sys.stderr)
        if variant in args.task_library_f1.split(","):
            answered = scoring.evaluate_with_task_library(path, examples, eval_config, show_progress=False)
            agreement = scoring.answer_agreement(examples, answered.predictions.answers, litert_answers)
            row = {"system": f"TFLite {variant}" + (" (model.tflite)" if variant == "dynamic" else "")
                   + ", Task Library (one answer(), tokenization included)", "variant": variant,
                   "runtime": "task-library", "size_mb": os.path.getsize(path) / 1e6,
                   "f1": answered.metrics["f1"], "exact_match": answered.metrics["exact_match"],
                   "latency_ms": task_library, "agreement_with_litert": agreement}
            rows.append(row)
            print(f"bench: {row['system']}: f1 {row['f1']:.2f}, the same answer as LiteRT for "
                  f"{100 * agreement:.1f}% of {len(examples)} questions", file=sys.stderr)

    weights = os.path.join(scratch, "hf_weights")
    write_hf_weights(saved_model, spec_name, weights)
    padded = {name: evaluation._padded(windows, name, config.seq_len) for name in conversion.INPUT_NAMES}
    windows_npz = os.path.join(scratch, "windows.npz")
    np.savez(windows_npz, ids=padded["input_word_ids"], mask=padded["input_mask"], type_ids=padded["input_type_ids"])
    peer_json = os.path.join(scratch, "peer.json")
    subprocess.run([PEER_PYTHON, os.path.join(HERE, "peer", "onnx_peer.py"), "--weights", weights,
                    "--windows", windows_npz, "--out", peer_json, "--runs", str(args.runs),
                    "--warmup", str(args.warmup), "--threads", args.threads], check=True)
    with open(peer_json) as f:
        peer = json.load(f)
    peer_logits = np.load(peer["logits"])
    for name, figures in peer["systems"].items():
        lengths = [len(w.input_word_ids) for w in windows]
        starts = [row[:n] for row, n in zip(peer_logits[f"{name}|start"], lengths, strict=True)]
        ends = [row[:n] for row, n in zip(peer_logits[f"{name}|end"], lengths, strict=True)]
        metrics = evaluation.score(examples, windows, starts, ends, eval_config).metrics
        rows.append({"system": name, "size_mb": figures["size_mb"], "f1": metrics["f1"],
                     "exact_match": metrics["exact_match"],
                     "latency_ms": {int(t): ms for t, ms in figures["latency_ms"].items()}})

    peer_int8 = next(row for row in rows if row["system"] == PEER_INT8)["latency_ms"]
    table = markdown_table(rows, threads, peer_int8, reference_f1)
    print(table)
    result = {"saved_model": saved_model, "spec": spec_name, "data": args.data, "windows": len(windows),
              "runs": args.runs, "warmup": args.warmup, "machine": f"{platform.node()}, {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}", "peer_versions": peer["versions"],
              "rows": rows, "table": table}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2, default=str)
    if scratch_owner:
        scratch_owner.cleanup()
    return 0


def _ms(value) -> str:
    return f"{value:.0f}" if value is not None else ""


def markdown_table(rows, threads, peer_int8, reference_f1: float) -> str:
    head = ["system", "size (MB)"]
    for t in threads:
        head += [f"{t} thread{'s' if t > 1 else ''} (ms)", f"ratio to ORT int8 ({t})"]
    for t in threads:
        head.append(f"Task Library, {t} thread{'s' if t > 1 else ''} (ms)")
    head += ["Task Library ratio (1)", "EM", "F1", "F1 drop", "XNNPACK", "answers as LiteRT's"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        latency = row.get("latency_ms", {})
        tl = row.get("task_library_ms", {})
        cells = [row["system"], f"{row['size_mb']:.1f}" if row.get("size_mb") else ""]
        for t in threads:
            ms = latency.get(t)
            cells += [_ms(ms), f"{ms / peer_int8[t]:.2f}" if ms else ""]
        for t in threads:
            cells.append(_ms(tl.get(t)))
        cells.append(f"{tl[threads[0]] / peer_int8[threads[0]]:.2f}" if tl else "")
        cells += [f"{row['exact_match']:.2f}", f"{row['f1']:.2f}",
                  f"{reference_f1 - row['f1']:.2f}" if "latency_ms" in row else ""]
        xnn = row.get("xnnpack")
        cells.append(f"{xnn['delegated']}/{xnn['nodes']} ops" if xnn else "")
        agreement = row.get("agreement_with_litert")
        cells.append(f"{100 * agreement:.1f}%" if agreement is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
