"""The retraining loop on the bundled sample: new data arrives as spans, `bertqa retrain` runs on each.

    python scripts/retrain_demo.py [--spans 3] [--runs-dir runs/retrain-demo] [retrain options]
    make retrain-demo

The sample's 20 training articles are dealt into `--spans` spans by article (never by
question); every span's eval.json is the sample's eval split (14 other articles), so each
model and its baseline are scored on the same held-out questions. Span k is written to
RUNS_DIR/data/span-k/ just before the k-th retrain, as a scheduler would find it, and
`bertqa retrain` reads the latest span: span 1 is trained from the pretrained weights and
pushed with no baseline; every later span is warm-started from the last pushed model and
pushed only if it is not worse than it. Ends with `bertqa lineage`.

Each span trains for one epoch (DEMO_EPOCHS; the default model's default is two), so the three
retrains take about half an hour. A third of the sample trains for one epoch to about F1 12,
under the pipeline's default --min-f1 of 40, so the demo sets --min-f1 10 (pass --epochs or
--min-f1 to change them): the point is the loop, in which each warm-started span adds to what
the last pushed model knew.
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

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bertqa.operations import lineage  # noqa: E402
from bertqa_cli import retrain  # noqa: E402

SAMPLE = REPO / "data" / "sample"
DEMO_MIN_F1 = 10.0
DEMO_EPOCHS = 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=3)
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "retrain-demo"))
    args, retrain_args = parser.parse_known_args(argv)
    runs_dir = pathlib.Path(args.runs_dir)
    data_dir = runs_dir / "data"
    train = json.loads((SAMPLE / "train.json").read_text(encoding="utf-8"))
    articles = train["data"]
    size = -(-len(articles) // args.spans)
    for k, start in enumerate(range(0, len(articles), size), start=1):
        folder = data_dir / f"span-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        part = articles[start:start + size]
        (folder / "train.json").write_text(json.dumps({"version": train.get("version", "1.1"), "data": part}))
        (folder / "eval.json").write_bytes((SAMPLE / "eval.json").read_bytes())
        questions = sum(len(p["qas"]) for a in part for p in a["paragraphs"])
        print(f"span {k}: {len(part)} articles, {questions} training questions -> {folder}", flush=True)
        # The user's options come last: argparse keeps the last value of an option given twice.
        code = retrain.main(["--data-dir", str(data_dir), "--runs-dir", str(runs_dir), "--min-f1", str(DEMO_MIN_F1),
                             "--epochs", str(DEMO_EPOCHS), *retrain_args])
        if code != 0:
            return code
    print()
    return lineage.main(["--runs-dir", str(runs_dir)])


if __name__ == "__main__":
    sys.exit(main())
