"""Time per question as users feel it: the pushed model.tflite in LiteRT, each question at its own
length, against the same file at 384 tokens and ONNX Runtime int8 at each question's own length.

    .venv/bin/python benchmarks/question_latency.py [--tflite runs/bertqa/serving/<version>/model.tflite]
        [--saved-model DIR] [--data data/sample/eval.json] [--squad-file train-v1.1.json --articles 418:428]
    make bench-peer SQUAD_FILE=path/to/train-v1.1.json     # runs it after benchmarks/peer_benchmark.py

--tflite: default the newest pushed model.tflite under --runs-dir; --saved-model: the Trainer
SavedModel it came from (default the newest), whose weights the peer runs and from which a
file with the 384 signature alone (the file before several window lengths) is exported with the
exporter's own code, for its size. The questions: the bundled eval split, and with --squad-file
the articles --articles (Python slice of the file's articles; the default 418:428 gives 2,660
questions of SQuAD v1.1 train) of a SQuAD v1.1 file, refused if an article is in the bundled sample (the
model of `make run` trained on its train split).

One step after the other, on one machine with nothing else running, per question set:
  1. LiteRT, 1 and 2 threads: every question's windows one after another, each at the smallest
     signature that holds it (runtime.question_latencies_seconds), then the same questions with
     every window at 384 (the 384 signature alone: what the file cost before);
  2. ONNX Runtime int8 (benchmarks/peer/onnx_own_length.py in benchmarks/.peer-venv), 1 and 2
     threads, each window at its own length, unpadded;
  3. F1 of all three paths, scored by the project's post-processing and SQuAD metric.
Then the memory of a LiteRT process with each file loaded (bertqa.on_device.memory_probe).
Prints a markdown table (ratios: the per-question median at the question's length over the same
file's at 384, and over ONNX Runtime int8's) and writes everything to --json.
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

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
PEER_PYTHON = os.path.join(HERE, ".peer-venv", "bin", "python")
SAMPLE = os.path.join(REPO, "data", "sample")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflite", default=None)
    parser.add_argument("--saved-model", default=None)
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "runs"))
    parser.add_argument("--data", default=os.path.join(SAMPLE, "eval.json"))
    parser.add_argument("--squad-file", default=None, help="a SQuAD v1.1 file to take held-out articles from")
    parser.add_argument("--articles", default="418:428", help="which of its articles (a Python slice)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json", default=os.path.join(HERE, "question_latency.json"))
    return parser.parse_args(argv)


def newest(pattern: str) -> str | None:
    return max(glob.glob(pattern), key=os.path.getmtime, default=None)


def heldout_file(squad_file: str, articles: str, directory: str) -> str:
    """The chosen articles of `squad_file` as a SQuAD file, none of them in the bundled sample."""
    start, _, stop = articles.partition(":")
    with open(squad_file, encoding="utf-8") as f:
        squad = json.load(f)
    chosen = squad["data"][int(start) if start else None:int(stop) if stop else None]
    sample_titles = set()
    for name in ("train.json", "eval.json"):
        with open(os.path.join(SAMPLE, name), encoding="utf-8") as f:
            sample_titles |= {article["title"] for article in json.load(f)["data"]}
    overlap = sorted(sample_titles & {article["title"] for article in chosen})
    if overlap:
        raise SystemExit(f"bench: articles {articles} of {squad_file} include the bundled sample's {overlap[:3]}: "
                         "choose articles the model never trained or was scored on")
    path = os.path.join(directory, "heldout.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": squad.get("version", "1.1"), "data": chosen}, f)
    return path


def peer_own_length(weights: str, windows, threads: str, directory: str) -> tuple[dict, list, list]:
    """ONNX Runtime int8's per-question seconds {threads: [...]} and each window's start/end logits."""
    owners = {}
    question_of = [owners.setdefault(w.example_id, len(owners)) for w in windows]
    lengths = [len(w.input_word_ids) for w in windows]
    path = os.path.join(directory, "questions.npz")
    np.savez(path, ids=np.concatenate([w.input_word_ids for w in windows]).astype(np.int32),
             mask=np.concatenate([w.input_mask for w in windows]).astype(np.int32),
             type_ids=np.concatenate([w.input_type_ids for w in windows]).astype(np.int32),
             window_lengths=np.asarray(lengths), window_question=np.asarray(question_of))
    out = os.path.join(directory, "peer_own_length.json")
    subprocess.run([PEER_PYTHON, os.path.join(HERE, "peer", "onnx_own_length.py"), "--weights", weights,
                    "--questions", path, "--out", out, "--threads", threads], check=True)
    with open(out) as f:
        peer = json.load(f)
    logits = np.load(peer["logits"])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    starts = [logits["start"][offsets[i]:offsets[i + 1]] for i in range(len(windows))]
    ends = [logits["end"][offsets[i]:offsets[i + 1]] for i in range(len(windows))]
    return {int(t): s for t, s in peer["seconds"].items()}, starts, ends


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from peer_benchmark import write_hf_weights

    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import WindowConfig
    from bertqa.model import evaluation
    from bertqa.on_device import conversion, runtime, scoring, task_metadata
    from components.tflite_exporter import core

    threads = [int(t) for t in args.threads.split(",")]
    tflite = args.tflite or newest(os.path.join(args.runs_dir, "*", "serving", "*", "model.tflite"))
    saved_model = args.saved_model or newest(
        os.path.join(args.runs_dir, "*", "artifacts", "Trainer", "model", "*", "Format-Serving"))
    if tflite is None or saved_model is None:
        raise SystemExit(f"bench: no pushed model.tflite or Trainer SavedModel under {args.runs_dir}; run `make run` "
                         "first, or pass --tflite and --saved-model")
    if subprocess.run(["bash", os.path.join(HERE, "peer", "setup.sh")]).returncode:
        raise SystemExit("bench: the peer environment could not be set up (benchmarks/peer/setup.sh, above).")
    scratch_owner = tempfile.TemporaryDirectory()
    scratch = scratch_owner.name
    vocab = task_metadata.unpack_vocab(tflite, scratch)
    spec_name = "minilm_offline"
    summary_path = os.path.join(os.path.dirname(saved_model), "training_summary.json")
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            spec_name = json.load(f).get("spec", spec_name)
    weights = os.path.join(scratch, "hf_weights")
    write_hf_weights(saved_model, spec_name, weights)
    one_signature = os.path.join(scratch, "model_384_only.tflite")
    core.export_variant(saved_model, task_metadata.saved_model_vocab_path(saved_model), one_signature, "dynamic",
                        conversion.TfliteExportConfig(window_lengths=()))
    files = {"model.tflite": {"path": tflite, "size_mb": os.path.getsize(tflite) / 1e6,
                              "signatures": list(runtime.TfliteQaRunner(tflite).seq_lens),
                              "memory": runtime.memory_mb(tflite)},
             "384 signature alone": {"path": one_signature, "size_mb": os.path.getsize(one_signature) / 1e6,
                                     "signatures": [384], "memory": runtime.memory_mb(one_signature)}}
    sets = [("bundled eval split", args.data)]
    if args.squad_file:
        sets.append((f"held-out SQuAD articles {args.articles}", heldout_file(args.squad_file, args.articles, scratch)))
    machine = f"{platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    print(f"bench: {tflite} ({files['model.tflite']['size_mb']:.2f} MB, signatures "
          f"{files['model.tflite']['signatures']}); {machine}", file=sys.stderr)

    results = []
    eval_config = evaluation.EvalConfig()
    for name, path in sets:
        examples, windows = evaluation.squad_file_windows(path, TokenizerConfig(vocab, True), WindowConfig())
        questions = runtime.windows_by_question(windows)
        needed = [len(w.input_word_ids) for w in windows]
        result = {"set": name, "questions": len(questions), "windows": len(windows),
                  "tokens_per_window": {"p10": float(np.percentile(needed, 10)), "median": float(np.median(needed)),
                                        "p90": float(np.percentile(needed, 90))}, "threads": {}}
        for lengths, key in ((None, "own_length"), ((384,), "384_only")):
            starts, ends = scoring.tflite_logits(tflite, windows, show_progress=False, lengths=lengths)
            result[f"litert_{key}_f1"] = evaluation.score(examples, windows, starts, ends, eval_config).metrics["f1"]
        for n in threads:
            own = runtime.question_latencies_seconds(tflite, questions, num_threads=n)
            only_384 = runtime.question_latencies_seconds(tflite, questions, num_threads=n, lengths=(384,))
            result["threads"][n] = {"litert_own_length": runtime.median_and_p90_ms(own),
                                    "litert_384_only": runtime.median_and_p90_ms(only_384)}
            print(f"bench: {name}, LiteRT {n} thread(s): {result['threads'][n]}", file=sys.stderr)
        peer_seconds, starts, ends = peer_own_length(weights, windows, args.threads, scratch)
        result["ort_int8_own_length_f1"] = evaluation.score(examples, windows, starts, ends, eval_config).metrics["f1"]
        for n in threads:
            result["threads"][n]["ort_int8_own_length"] = runtime.median_and_p90_ms(peer_seconds[n])
        results.append(result)

    table = markdown_table(results, threads)
    print(table)
    print("\n" + "\n".join(f"- {label}: {figures['size_mb']:.2f} MB, signatures {figures['signatures']}, LiteRT "
                           f"process +{figures['memory']['model_mb']:.0f} MB with it loaded (peak "
                           f"{figures['memory']['peak_mb']:.0f} MB)" for label, figures in files.items()))
    with open(args.json, "w") as f:
        json.dump({"tflite": tflite, "saved_model": saved_model, "machine": machine, "files": files,
                   "sets": results, "table": table}, f, indent=2)
    scratch_owner.cleanup()
    return 0


def markdown_table(results, threads) -> str:
    head = ["questions", "threads", "LiteRT at its length: median / p90 (ms)", "LiteRT at 384: median / p90 (ms)",
            "ORT int8 at its length: median / p90 (ms)", "ratio to 384", "ratio to ORT int8",
            "F1 at its length / at 384 / ORT int8"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        for n in threads:
            figures = result["threads"][n]
            own, only, peer = figures["litert_own_length"], figures["litert_384_only"], figures["ort_int8_own_length"]
            lines.append("| " + " | ".join([
                f"{result['set']} ({result['questions']:,})", str(n),
                f"{own['median']:.1f} / {own['p90']:.1f}", f"{only['median']:.1f} / {only['p90']:.1f}",
                f"{peer['median']:.1f} / {peer['p90']:.1f}", f"{own['median'] / only['median']:.2f}x",
                f"{own['median'] / peer['median']:.2f}x",
                f"{result['litert_own_length_f1']:.2f} / {result['litert_384_only_f1']:.2f} / "
                f"{result['ort_int8_own_length_f1']:.2f}"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
