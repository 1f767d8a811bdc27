"""Transfer to a domain unlike Wikipedia: COVID-QA's held-out articles, with and without a SQuAD-tuned base.

    python scripts/covid_transfer.py --covid-file ../shared/data/covid-qa.json \
        --base runs/base/bertqa/serving/<version> --minutes 20
    make covid-transfer COVID_FILE=../shared/data/covid-qa.json BASE=runs/base/bertqa/serving/<version>

COVID-QA (Möller et al., 2020; 98 long scientific articles, 1,380 questions) is split by article
(scripts/split_by_article.py --eval-share 0.3: the articles whose title hash falls in the first
30%), and three models are scored on the held-out articles' questions, each as a SavedModel and as
its pushed model.tflite, on the same windows:

(a) the base, zero-shot: trained on SQuAD only (`make base-model`);
(b) the offline encoder fine-tuned on COVID-QA's training articles for --minutes of training;
(c) the base fine-tuned on the same articles for the same time (`--init-from`).

This is TFLite Model Maker's tutorial (start from a SQuAD-tuned model, adapt it to your data),
end to end, on data that is not SQuAD. (b) and (c) are full pipeline runs under RUNS_DIR with the
default spec's recipe; both are pushed whatever their F1 (--min-f1 0), so each row has a model.
The table goes to RUNS_DIR/transfer.json and, as Markdown, to stdout.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def fine_tune(name: str, data_dir: pathlib.Path, runs_dir: pathlib.Path, minutes: float, extra: list[str]) -> dict:
    """One pipeline run on COVID-QA's training articles; its pushed version and wall-clock seconds."""
    import local_runner
    from bertqa.operations import pushed_models

    started = time.monotonic()
    argv = ["--data-dir", str(data_dir), "--runs-dir", str(runs_dir / name), "--budget-minutes", f"{minutes:g}",
            "--epochs", "3", "--no-baseline", "--min-f1", "0", *extra]
    if local_runner.main(argv) != 0:
        raise SystemExit(f"error: the {name} run failed; its runs directory is {runs_dir / name}")
    pushed = pushed_models.latest_pushed(str(runs_dir / name / "bertqa" / "serving"))
    summary = pushed.training_summary()
    return {"version": pushed, "seconds": round(time.monotonic() - started),
            "training_seconds": summary["training_seconds"], "steps": summary["steps_trained"],
            "train_windows": summary["train_windows"]}


def main() -> int:
    from split_by_article import write_splits

    from bertqa.data import article_split
    from bertqa.operations import pushed_models
    from bertqa_cli.base_model import heldout_scores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--covid-file", required=True)
    parser.add_argument("--base", required=True, help="a pushed version of the base (runs/base/bertqa/serving/<v>)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time of (b) and of (c)")
    parser.add_argument("--eval-share", type=float, default=0.3)
    parser.add_argument("--runs-dir", default="runs/covid")
    parser.add_argument("--only", nargs="+", choices=("a", "b", "c"), default=("a", "b", "c"))
    args = parser.parse_args()
    runs_dir = pathlib.Path(args.runs_dir)
    data_dir = runs_dir / "data"
    if not (data_dir / "eval.json").exists():
        write_splits(args.covid_file, article_split.ArticleSplit(eval_share=args.eval_share), str(data_dir))
    eval_file = data_dir / "eval.json"
    base = pushed_models.find_pushed(os.path.dirname(args.base.rstrip("/")), os.path.basename(args.base.rstrip("/")))
    if base is None:
        raise SystemExit(f"error: {args.base} is not a pushed version (serving/<version>/ with model.tflite)")
    results_file = runs_dir / "transfer.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    rows = {"a": ("(a) the base, zero-shot", None), "b": ("(b) the encoder fine-tuned on COVID-QA", []),
            "c": ("(c) the base fine-tuned on COVID-QA", ["--init-from", os.path.abspath(base.path)])}
    for key in args.only:
        label, extra = rows[key]
        if extra is None:
            version, run = base, {}
        else:
            run = fine_tune(f"{key}_fine_tuned", data_dir, runs_dir, args.minutes, extra)
            version = run.pop("version")
        results[key] = {"label": label, "version": version.path, **run,
                        "scores": heldout_scores(version, eval_file)}
        results_file.write_text(json.dumps({**results, "base": os.path.abspath(base.path),
                                            "eval_questions": article_split.question_count(
                                                json.loads(eval_file.read_text())["data"])}, indent=2))
    print(f"COVID-QA held-out articles ({results_file}):\n")
    print("| model | training | SavedModel F1 / EM | model.tflite F1 |\n|---|---|---|---|")
    for key in ("a", "b", "c"):
        if key in results:
            row = results[key]
            saved, tflite = row["scores"]["saved_model"], row["scores"]["model.tflite"]
            training = (f"{row['steps']} steps, {row['training_seconds']:.0f} s ({row['seconds']} s in all)"
                        if "steps" in row else "none on COVID-QA")
            print(f"| {row['label']} | {training} | {saved['f1']:.2f} / {saved['exact_match']:.2f} | "
                  f"{tflite['f1']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
