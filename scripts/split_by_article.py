"""Splits a SQuAD file (v1.1 or v2.0) into train, eval and held-out files by article, never by question.

    python scripts/split_by_article.py ../shared/data/squad-v2.0-train-prefix.json \
        --eval-titles 'Spectre_(2015_film)' --out-dir /tmp/v2
    python scripts/split_by_article.py ../shared/data/covid-qa.json --eval-share 0.3 --out-dir runs/covid/data

The articles named by `--eval-titles` (or the last `--eval-articles`, or the share `--eval-share`
of titles chosen by hashing each title) go to eval.json, the rest to train.json, each keeping the
input's `version`. `--eval-max-paragraphs N` keeps only the first N paragraphs of each eval article
in eval.json and writes the rest of them to heldout.json: never trained on, and not the split the
pipeline blesses on either (bertqa.data.article_split). With the last 14 articles and 8
paragraphs, a SQuAD v1.1 training file gives the 582 questions of data/sample/eval.json and 2,146
held-out ones. The pipeline reads train.json and eval.json; heldout.json is for `bertqa evaluate`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bertqa.data import article_split  # noqa: E402


def write_splits(squad_file: str, split: article_split.ArticleSplit, out_dir: str) -> None:
    """Writes the split files (article_split.write_split_files) and prints what each holds."""
    for path, part in article_split.write_split_files(squad_file, split, out_dir).values():
        print(f"{path}: {len(part)} articles, {article_split.question_count(part)} questions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad_file")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--eval-articles", type=int, help="the last N articles go to eval")
    choice.add_argument("--eval-titles", nargs="+", help="these article titles go to eval")
    choice.add_argument("--eval-share", type=float, help="this share of the articles, chosen by title hash")
    parser.add_argument("--eval-max-paragraphs", type=int, default=None,
                        help="eval keeps the first N paragraphs of each eval article; the rest go to heldout.json")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    try:
        split = article_split.ArticleSplit(eval_titles=tuple(args.eval_titles or ()), eval_articles=args.eval_articles,
                                           eval_share=args.eval_share, eval_max_paragraphs=args.eval_max_paragraphs)
        write_splits(args.squad_file, split, args.out_dir)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
