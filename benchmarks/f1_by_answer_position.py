"""SQuAD v1.1 F1 of several runs' predictions, by where the answer lies in its paragraph.

A model trained on short windows (--train-seq-len) and scored on long ones may lose most where
the answer lies far into the context; this splits the eval questions by the first gold answer's
first character and scores each run's predictions on each part, with the official metric.

    .venv/bin/python benchmarks/f1_by_answer_position.py data/sample/eval.json \\
        384=runs-a/bertqa/artifacts/SquadEvaluator/evaluation/7/predictions.json \\
        128=runs-b/bertqa/artifacts/SquadEvaluator/evaluation/7/predictions.json

Pure Python and JSON (no TensorFlow): predictions.json maps question id -> answer text, as the
SquadEvaluator writes it beside metrics.json.
"""

from __future__ import annotations

import argparse
import json
import sys

from bertqa.model.squad_metrics import f1_v1

DEFAULT_EDGES = (400, 700)  # characters: about 90 and 155 tokens into an English paragraph


def position_part(start: int, edges: tuple[int, ...]) -> str:
    """The label of the part of the paragraph a character offset falls in, e.g. '400-700'."""
    low = 0
    for edge in edges:
        if start < edge:
            return f"{low}-{edge}"
        low = edge
    return f">={low}"


def f1_by_part(squad: dict, runs: dict[str, dict[str, str]], edges: tuple[int, ...]) -> dict[str, dict]:
    """{part: {"questions": n, run: F1 0-100}} over the answerable questions of a SQuAD file."""
    scores: dict[str, dict[str, list[float]]] = {}
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if not qa.get("answers"):
                    continue
                part = scores.setdefault(position_part(qa["answers"][0]["answer_start"], edges), {})
                for name, predictions in runs.items():
                    gold = [answer["text"] for answer in qa["answers"]]
                    part.setdefault(name, []).append(max(f1_v1(predictions.get(qa["id"], ""), g) for g in gold))
    labels = [position_part(0, edges)] + [position_part(edge, edges) for edge in edges]
    return {label: {"questions": len(next(iter(scores[label].values()))),
                    **{name: 100 * sum(values) / len(values) for name, values in scores[label].items()}}
            for label in labels if label in scores}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad_file", help="the SQuAD v1.1 file the predictions answer (the eval split)")
    parser.add_argument("runs", nargs="+", metavar="NAME=PREDICTIONS_JSON")
    parser.add_argument("--edges", default=",".join(map(str, DEFAULT_EDGES)),
                        help="character offsets that split the paragraphs (default %(default)s)")
    args = parser.parse_args(argv)
    if any("=" not in run for run in args.runs):
        parser.error("name each run's predictions: NAME=path/to/predictions.json")
    with open(args.squad_file) as f:
        squad = json.load(f)
    runs = {}
    for run in args.runs:
        name, path = run.split("=", 1)
        with open(path) as f:
            runs[name] = json.load(f)
    edges = tuple(int(edge) for edge in args.edges.split(","))
    names = list(runs)
    print("| answer starts at character | questions | " + " | ".join(f"F1 {name}" for name in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label, row in f1_by_part(squad, runs, edges).items():
        print(f"| {label} | {row['questions']} | " + " | ".join(f"{row[name]:.1f}" for name in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
