"""Cuts the first N articles out of a SQuAD file (v1.1 or v2.0), keeping its `version`.

    python scripts/first_articles.py train-v2.0.json --articles 10 --out /tmp/squad-v2.0-train-prefix.json

The SQuAD 2.0 figures in docs/metrics.md were measured on the first 10 articles of the
official SQuAD 2.0 training set (train-v2.0.json, https://rajpurkar.github.io/SQuAD-explorer/,
CC BY-SA 4.0): 4,719 questions, 348 of them unanswerable. The file used then,
squad-v2.0-train-prefix.json (sha256 53e67dd96e8597a8ef600e795d54d3fdef18486d42721884d38d652e2a2638cb),
is not in the repo; this makes it from the official file. The output is written as
json.dumps writes it (ASCII escapes, default separators): fed that prefix file itself with
--articles 10, the script writes it back byte for byte. It prints the output's articles,
questions, unanswerable questions and sha256, to compare with the figures above.
Then split it by article as docs/metrics.md shows (scripts/split_by_article.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad_file", help="a SQuAD file, e.g. the official train-v2.0.json")
    parser.add_argument("--articles", type=int, default=10, help="how many articles to keep, from the start")
    parser.add_argument("--out", required=True, help="the file to write")
    args = parser.parse_args()
    squad = json.loads(pathlib.Path(args.squad_file).read_text(encoding="utf-8"))
    articles = squad["data"]
    if not 0 < args.articles <= len(articles):
        raise SystemExit(f"{args.squad_file} has {len(articles)} articles; --articles must be between 1 and "
                         f"{len(articles)}")
    kept = articles[:args.articles]
    text = json.dumps({"version": squad.get("version", "1.1"), "data": kept})
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    questions = [qa for article in kept for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    unanswerable = sum(1 for qa in questions if qa.get("is_impossible"))
    print(f"{out}: {len(kept)} articles, {len(questions)} questions, {unanswerable} unanswerable, "
          f"sha256 {hashlib.sha256(text.encode('utf-8')).hexdigest()}")


if __name__ == "__main__":
    main()
