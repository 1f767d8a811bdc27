"""Splits a SQuAD file (v1.1 or v2.0) into train and eval files by article, never by question.

    python scripts/split_by_article.py ../shared/data/squad-v2.0-train-prefix.json \
        --eval-titles 'Spectre_(2015_film)' --out-dir /tmp/v2

The articles named by `--eval-titles` (or the last `--eval-articles`) go to eval.json, the
rest to train.json, each keeping the input's `version`. `--eval-max-paragraphs N` keeps only
the first N paragraphs of each eval article (the rest are dropped, not moved to train), so an
eval split spans several topics at a cost that suits the evaluation: with the last 14 articles
and 8 paragraphs, a SQuAD v1.1 training file gives the 582 questions of data/sample/eval.json.
Use it when the pipeline's hash split by title would leave too few articles on one side (a file
of 10 articles, say), or to hold out a fixed set of articles (make run-hour).
"""

from __future__ import annotations

import argparse
import json
import pathlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad_file")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--eval-articles", type=int, help="the last N articles go to eval")
    choice.add_argument("--eval-titles", nargs="+", help="these article titles go to eval")
    parser.add_argument("--eval-max-paragraphs", type=int, default=None,
                        help="keep only the first N paragraphs of each eval article")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    squad = json.loads(pathlib.Path(args.squad_file).read_text(encoding="utf-8"))
    articles = squad["data"]
    if args.eval_titles:
        missing = set(args.eval_titles) - {a["title"] for a in articles}
        if missing:
            raise SystemExit(f"{args.squad_file} has no article titled {', '.join(sorted(missing))}")
        eval_part = [a for a in articles if a["title"] in args.eval_titles]
    elif 0 < args.eval_articles < len(articles):
        eval_part = articles[-args.eval_articles:]
    else:
        raise SystemExit(f"{args.squad_file} has {len(articles)} articles; --eval-articles must be between 1 and "
                         f"{len(articles) - 1}")
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_part = [a for a in articles if a not in eval_part]
    if args.eval_max_paragraphs:
        eval_part = [{**a, "paragraphs": a["paragraphs"][:args.eval_max_paragraphs]} for a in eval_part]
    splits = {"train": train_part, "eval": eval_part}
    for name, part in splits.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps({"version": squad.get("version", "1.1"), "data": part}, ensure_ascii=False),
                        encoding="utf-8")
        questions = sum(len(p["qas"]) for a in part for p in a["paragraphs"])
        print(f"{path}: {len(part)} articles, {questions} questions")


if __name__ == "__main__":
    main()
