"""Cuts the bundled demo sample and the test fixtures out of the SQuAD v1.1 training set.

Train and eval come from different articles (never split by question: paragraphs
must not leak across splits). Run from the repo root:

    python scripts/make_sample.py ../shared/data/squad-v1.1-train.json
"""

from __future__ import annotations

import argparse
import json
import pathlib


def take_articles(articles: list[dict], max_questions: int, max_paragraphs: int | None = None) -> list[dict]:
    """Whole articles in order until `max_questions` questions (paragraphs optionally capped per article)."""
    taken, count = [], 0
    for article in articles:
        paragraphs = article["paragraphs"][:max_paragraphs] if max_paragraphs else article["paragraphs"]
        questions = sum(len(p["qas"]) for p in paragraphs)
        if count + questions > max_questions and taken:
            break
        taken.append({"title": article["title"], "paragraphs": paragraphs})
        count += questions
    return taken


def write(path: pathlib.Path, articles: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": articles}, f, ensure_ascii=False)
    questions = sum(len(p["qas"]) for a in articles for p in a["paragraphs"])
    print(f"{path}: {len(articles)} articles, {questions} questions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("squad_train", help="the official SQuAD v1.1 train-v1.1.json")
    parser.add_argument("--train-questions", type=int, default=17500)
    parser.add_argument("--eval-questions", type=int, default=600)
    args = parser.parse_args()
    articles = json.loads(pathlib.Path(args.squad_train).read_text(encoding="utf-8"))["data"]
    # Eval from the end of the file, train from the start: disjoint articles by construction.
    # At most 8 paragraphs an article, so eval spans several topics.
    eval_articles = take_articles(list(reversed(articles)), args.eval_questions, max_paragraphs=8)
    eval_titles = {a["title"] for a in eval_articles}
    train_articles = take_articles([a for a in articles if a["title"] not in eval_titles], args.train_questions)
    write(pathlib.Path("data/sample/train.json"), train_articles)
    write(pathlib.Path("data/sample/eval.json"), eval_articles)
    # Test fixtures: two paragraphs from each of a few articles, so the tiny pipeline runs in seconds.
    write(pathlib.Path("tests/fixtures/tiny_train.json"), take_articles(articles[:3], 30, max_paragraphs=3))
    write(pathlib.Path("tests/fixtures/tiny_eval.json"), take_articles(articles[-2:], 20, max_paragraphs=2))


if __name__ == "__main__":
    main()
