"""Transfer to a domain unlike Wikipedia: COVID-QA's held-out articles, with and without a SQuAD-tuned base.

    python scripts/covid_transfer.py --covid-file ../shared/data/covid-qa.json \
        --base runs/base/bertqa/serving/<version> --minutes 15
    make covid-transfer COVID_FILE=../shared/data/covid-qa.json BASE=runs/base/bertqa/serving/<version>

COVID-QA (Möller et al., 2020; 98 long scientific articles, 1,380 questions) is split by article
(bertqa.data.article_split): heldout.json holds the articles whose title hash falls in the first
30% (37 articles, 563 questions); of the others, the last PIPELINE_EVAL_ARTICLES (4) in file order are
the fine-tuning runs' eval split (eval.json, what their Evaluator and LiteRT gate score) and the rest
their training split (train.json). Three models are scored on the held-out questions, as a
SavedModel and (--formats) as the pushed model.tflite, on the same windows:

(a) the base, zero-shot: trained on SQuAD only (`make base-model`);
(b) the offline encoder fine-tuned on COVID-QA's training articles for --minutes of training;
(c) the base fine-tuned on the same articles for the same time (`--init-from`).

This is TFLite Model Maker's tutorial (start from a SQuAD-tuned model, adapt it to your data),
end to end, on data that is not SQuAD. (b) and (c) are full pipeline runs under RUNS_DIR with the
default spec's recipe; both are pushed whatever their F1 (--min-f1 0), so each row has a model.
The table goes to RUNS_DIR/transfer.json and, as Markdown, to stdout. The rows are trained first
and recorded there at once, then scored; a call resumes from that file, so the trainings and the
scoring (about 28 minutes per row for the SavedModel on 2 cores, some 28,000 windows) can be spent
in separate calls (--train-only, then the same command without it).

Why a small eval split of training-side articles: a COVID-QA context is a whole article (about 4,500
tokens, some 50 windows per question), so the held-out questions make some 28,000 windows. The
pipeline's Evaluator and LiteRT gate scoring those too would triple each run's scoring time, and
nothing in these runs is chosen by their eval split (--min-f1 0, no baseline; the Trainer does not
read it), so a few articles serve it; the held-out articles stay unseen by everything but the table.
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
import time  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import options  # noqa: E402  (no TensorFlow at import)

PIPELINE_EVAL_ARTICLES = 4


def covid_splits(covid_file: str, heldout_share: float) -> tuple[str, dict[str, list]]:
    """COVID-QA's version and its articles by part: train and eval for the fine-tuning runs, heldout for the
    table (see the module docstring)."""
    from bertqa.data import article_split

    covid = json.loads(pathlib.Path(covid_file).read_text(encoding="utf-8"))
    outer = article_split.split_articles(covid["data"], article_split.ArticleSplit(eval_share=heldout_share),
                                         source=covid_file)
    inner = article_split.split_articles(outer["train"], article_split.ArticleSplit(
        eval_articles=PIPELINE_EVAL_ARTICLES), source=f"{covid_file}'s training articles")
    return covid.get("version", "1.1"), {"train": inner["train"], "eval": inner["eval"], "heldout": outer["eval"]}


def write_covid_splits(covid_file: str, heldout_share: float, data_dir: pathlib.Path) -> None:
    """train.json, eval.json and heldout.json in `data_dir`."""
    from bertqa.data import article_split

    version, parts = covid_splits(covid_file, heldout_share)
    for path, part in article_split.write_parts(parts, version, str(data_dir)).values():
        print(f"{path}: {len(part)} articles, {article_split.question_count(part)} questions")


def _question_ids(articles: list) -> set[str]:
    return {qa["id"] for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


def prepare_covid_splits(covid_file: str, heldout_share: float, data_dir: pathlib.Path) -> None:
    """Writes the splits into `data_dir`, or checks that those already there hold the held-out questions
    that `heldout_share` picks: the table's rows are only comparable on the same questions, and a run
    resumed with another share would otherwise score on the old ones."""
    heldout_file = data_dir / "heldout.json"
    if not heldout_file.exists():
        write_covid_splits(covid_file, heldout_share, data_dir)
        return
    written = _question_ids(json.loads(heldout_file.read_text(encoding="utf-8"))["data"])
    if written != _question_ids(covid_splits(covid_file, heldout_share)[1]["heldout"]):
        raise SystemExit(f"error: {heldout_file} does not hold the questions that --heldout-share "
                         f"{heldout_share:g} holds out of {covid_file}: use another --runs-dir for another split")


def fine_tune(name: str, data_dir: pathlib.Path, runs_dir: pathlib.Path, minutes: float, extra: list[str]) -> dict:
    """One pipeline run on COVID-QA's training articles: its pushed version's path, its training, and the
    run's wall-clock seconds."""
    import local_runner
    from bertqa.operations import pushed_models

    started = time.monotonic()
    argv = ["--data-dir", str(data_dir), "--runs-dir", str(runs_dir / name), "--budget-minutes", f"{minutes:g}",
            "--epochs", "3", "--no-baseline", "--min-f1", "0", *extra]
    if local_runner.main(argv) != 0:
        raise SystemExit(f"error: the {name} run failed; its runs directory is {runs_dir / name}")
    pushed = pushed_models.latest_pushed(str(runs_dir / name / "bertqa" / "serving"))
    summary = pushed.training_summary()
    return {"version": os.path.abspath(pushed.path), "minutes": minutes, "seconds": round(time.monotonic() - started),
            "training_seconds": summary["training_seconds"], "steps": summary["steps_trained"],
            "train_windows": summary["train_windows"]}


def pushed_version(path: str):
    """The pushed_models.PushedModel at serving/<version>/ `path`, or None."""
    from bertqa.operations import pushed_models

    return pushed_models.find_pushed(os.path.dirname(path.rstrip("/")), os.path.basename(path.rstrip("/")))


def main() -> int:
    from pipeline import quiet_startup  # noqa: F401  (before TensorFlow: hides its imports' known-harmless noise)

    # isort: split
    from bertqa.data import article_split
    from bertqa_cli.base_model import SCORED_FORMATS, heldout_scores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--covid-file", required=True)
    parser.add_argument("--base", required=True, help="a pushed version of the base (runs/base/bertqa/serving/<v>)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time of (b) and of (c)")
    parser.add_argument("--heldout-share", type=float, default=0.3,
                        help="the share of articles held out, by title hash")
    parser.add_argument("--runs-dir", default="runs/covid")
    parser.add_argument("--only", nargs="+", choices=("a", "b", "c"), default=("a", "b", "c"))
    parser.add_argument("--formats", nargs="+", choices=SCORED_FORMATS, default=SCORED_FORMATS,
                        help="what to score on the held-out questions: the SavedModel, the pushed model.tflite "
                             "or both (the default); each takes some minutes on 2 cores")
    parser.add_argument("--answerless-keep", type=options.share_arg, default=None, metavar="SHARE",
                        help="(b) and (c) train on every window with an answer and only SHARE of the others "
                             "(the runners' --answerless-keep; default: all)")
    parser.add_argument("--train-only", action="store_true",
                        help="train the rows that are not trained yet and stop; a later call scores them")
    args = parser.parse_args()
    runs_dir = pathlib.Path(args.runs_dir)
    data_dir = runs_dir / "data"
    heldout_file = data_dir / "heldout.json"
    prepare_covid_splits(args.covid_file, args.heldout_share, data_dir)
    base = pushed_version(args.base)
    if base is None:
        raise SystemExit(f"error: {args.base} is not a pushed version (serving/<version>/ with model.tflite)")
    results_file = runs_dir / "transfer.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if results.get("base", os.path.abspath(base.path)) != os.path.abspath(base.path):
        raise SystemExit(f"error: {results_file} holds a table for the base {results['base']}, not {args.base}: "
                         "use another --runs-dir")
    results.update(base=os.path.abspath(base.path), heldout_questions=article_split.question_count(
        json.loads(heldout_file.read_text())["data"]))
    recipe = ["--answerless-keep", f"{args.answerless_keep:g}"] if args.answerless_keep else []
    rows = {"a": ("(a) the base, zero-shot", None), "b": ("(b) the encoder fine-tuned on COVID-QA", recipe),
            "c": ("(c) the base fine-tuned on COVID-QA", ["--init-from", os.path.abspath(base.path), *recipe])}

    def save() -> None:
        results_file.write_text(json.dumps(results, indent=2))

    # Train every requested row first and record it at once, then score: a call that is stopped
    # (or --train-only) keeps its trained rows, and the next call scores them without training again.
    for key in args.only:
        label, extra = rows[key]
        if extra is None:
            results.setdefault(key, {"label": label, "version": os.path.abspath(base.path), "scores": {}})
        elif "steps" not in results.get(key, {}):
            results[key] = {"label": label, **fine_tune(f"{key}_fine_tuned", data_dir, runs_dir, args.minutes, extra),
                            "answerless_keep": args.answerless_keep, "scores": {}}
        elif results[key].get("minutes", args.minutes) != args.minutes:
            raise SystemExit(f"error: row ({key}) was trained for {results[key]['minutes']:g} minutes, not "
                             f"{args.minutes:g}: (b) and (c) train for the same time; use another --runs-dir")
        elif results[key].get("answerless_keep") != args.answerless_keep:
            raise SystemExit(f"error: row ({key}) was trained with --answerless-keep "
                             f"{results[key].get('answerless_keep') or 'unset'}, not {args.answerless_keep or 'unset'}:"
                             " (b) and (c) train with the same recipe; use another --runs-dir")
        save()
    if args.train_only:
        print(f"trained {', '.join(args.only)}; score them with the same command without --train-only")
        return 0
    for key in args.only:
        row = results[key]
        missing = tuple(name for name in args.formats if name not in row["scores"])
        if missing:
            version = pushed_version(row["version"])
            started = time.monotonic()
            row["scores"].update(heldout_scores(version, heldout_file, missing))
            # One tokenization serves every format scored together, so their time is one figure.
            row.setdefault("scoring_seconds", {})["+".join(missing)] = round(time.monotonic() - started)
            save()
    print(f"COVID-QA held-out articles ({results_file}):\n")
    print("| model | training | SavedModel F1 / EM | model.tflite F1 |\n|---|---|---|---|")
    for key in ("a", "b", "c"):
        if key in results:
            row = results[key]
            saved, tflite = row["scores"].get("saved_model"), row["scores"].get("model.tflite")
            in_all = f" ({row['seconds']} s in all)" if row.get("seconds") is not None else ""
            training = (f"{row['steps']} steps, {row['training_seconds']:.0f} s{in_all}"
                        if "steps" in row else "none on COVID-QA")
            saved_text = f"{saved['f1']:.2f} / {saved['exact_match']:.2f}" if saved else "not scored"
            tflite_text = f"{tflite['f1']:.2f}" if tflite else "not scored"
            print(f"| {row['label']} | {training} | {saved_text} | {tflite_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
