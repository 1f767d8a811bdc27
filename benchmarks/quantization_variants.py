"""Every TFLite quantization variant of a trained SavedModel: size, latency, EM/F1, F1 drop, Task Library, blessing.

    .venv/bin/python benchmarks/quantization_variants.py \
        --saved-model runs/bertqa/artifacts/Trainer/model/<id>/Format-Serving \
        --train data/sample/train.json --eval data/sample/eval.json [--variants all] [--output-dir D]

Runs the TFLiteExporter's own core (components/tflite_exporter/core.py) outside the
pipeline: the same export, scoring, timing, Task Library check and blessing, with
the eval split and the int8 calibration windows made from SQuAD JSON files by the
pipeline's windowing instead of read from BertQATransform's artifact. The SavedModel
is scored with the same function as the variants (SquadEvaluator's). Prints a
Markdown table and writes variants.json (and the files) under --output-dir.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", required=True, help="a trainer SavedModel (with the `logits` signature)")
    parser.add_argument("--train", required=True, help="SQuAD JSON whose windows calibrate int8")
    parser.add_argument("--eval", required=True, help="SQuAD JSON the variants are scored on")
    parser.add_argument("--variants", default="all", help="comma-separated, or 'all' (default)")
    parser.add_argument("--max-f1-drop", action="append", default=[], metavar="VARIANT=POINTS",
                        help="override a variant's F1-drop limit (repeatable)")
    parser.add_argument("--output-dir", default=None, help="where the files and variants.json go (default: temp)")
    parser.add_argument("--version-2-with-negative", action="store_true")
    parser.add_argument("--cased", action="store_true", help="the model was trained on cased text")
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--query-len", type=int, default=64)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--representative-steps", type=int, default=100)
    parser.add_argument("--eval-threads", type=int, default=None, help="default: every CPU")
    parser.add_argument("--latency-runs", type=int, default=10)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from bertqa.data import windowing
    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.model import evaluation
    from bertqa.on_device import task_metadata
    from components.tflite_exporter import core

    plan = core.ExportPlan(
        variants=core.parse_variants(args.variants), max_f1_drop=core.parse_max_f1_drop(args.max_f1_drop),
        seq_len=args.seq_len, query_len=args.query_len, do_lower_case=not args.cased,
        representative_steps=args.representative_steps, eval_threads=args.eval_threads,
        latency_runs=args.latency_runs)
    vocab = task_metadata.saved_model_vocab_path(args.saved_model)
    tokenizer = TokenizerConfig(vocab, not args.cased)
    window = windowing.WindowConfig(seq_len=args.seq_len, query_len=args.query_len, doc_stride=args.doc_stride)
    eval_config = evaluation.EvalConfig(version_2_with_negative=args.version_2_with_negative)

    started = time.monotonic()
    data = core.EvalData(*evaluation.squad_file_windows(args.eval, tokenizer, window, args.version_2_with_negative))
    _, train_windows = evaluation.squad_file_windows(args.train, tokenizer, window, args.version_2_with_negative,
                                                     is_training=True)
    representative = core.representative_windows(train_windows, plan.representative_steps)
    reference = core.saved_model_metrics(args.saved_model, data, eval_config)
    logging.info("SavedModel: EM %.2f, F1 %.2f on %d questions / %d windows (%.0fs)", reference.exact_match,
                 reference.f1, len(data.examples), len(data.windows), time.monotonic() - started)

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="quantization_variants_")
    report = core.export_variants(args.saved_model, vocab, output_dir, os.path.join(output_dir, "Format-Serving"),
                                  plan, data, reference, eval_config, representative)
    print(core.markdown_table(report))
    print(f"\nSavedModel {args.saved_model}; {len(data.examples)} questions, {len(data.windows)} windows; "
          f"push blessed: {report.blessed} ({report.reason})")
    print("seconds per variant (export + score + latency): "
          + ", ".join(f"{v.variant} {v.seconds:.0f}" for v in report.variants))
    print(f"variants.json and files: {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
