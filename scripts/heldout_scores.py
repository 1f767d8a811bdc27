"""SQuAD F1 of a runs directory's latest pushed version on a held-out file: its SavedModel and model.tflite.

    python scripts/heldout_scores.py runs/hour runs/hour/data/heldout.json

Prints one line and appends it, as JSON, to RUNS_DIR/heldout_scores.jsonl. make run-hour calls it on the
2,146 questions of its held-out articles that neither its training nor its blessing saw
(bertqa.data.article_split): the split that tells two recipes apart, where the eval split's 582
questions carry about +-1.7 F1 of sampling noise.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main() -> int:
    from bertqa.operations import pushed_models
    from bertqa_cli.base_model import heldout_scores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir")
    parser.add_argument("heldout_file")
    parser.add_argument("--pipeline-name", default="bertqa")
    args = parser.parse_args()
    latest = pushed_models.latest_pushed(os.path.join(args.runs_dir, args.pipeline_name, "serving"))
    if latest is None:
        print(f"error: nothing is pushed under {args.runs_dir}: run the pipeline first", file=sys.stderr)
        return 2
    scores = heldout_scores(latest, pathlib.Path(args.heldout_file))
    saved, tflite = scores["saved_model"], scores["model.tflite"]
    print(f"held-out {args.heldout_file}: version {latest.version}  SavedModel exact_match {saved['exact_match']:.2f} "
          f"f1 {saved['f1']:.2f}  model.tflite exact_match {tflite['exact_match']:.2f} f1 {tflite['f1']:.2f}  "
          f"drop {saved['f1'] - tflite['f1']:.2f}")
    with open(os.path.join(args.runs_dir, "heldout_scores.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"version": latest.version, "heldout_file": os.path.abspath(args.heldout_file),
                            **scores}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
