"""SQuAD v1.1 F1 of several runs' predictions, by where the answer lies in its paragraph.

A model trained on short windows (--train-seq-len) and scored on long ones may lose most where
the answer lies far into the context; this splits the eval questions by the first gold answer's
first character and scores each run's predictions on each part with the project's official metric
(squad_v1_metrics).

    .venv/bin/python benchmarks/f1_by_answer_position.py data/sample/eval.json \\
        384=runs-a/bertqa/artifacts/SquadEvaluator/evaluation/7/predictions.json \\
        128=runs-b/bertqa/artifacts/SquadEvaluator/evaluation/7/predictions.json

predictions.json maps question id -> answer text, as the SquadEvaluator writes it beside
metrics.json; the questions are read with the pipeline's own reader (squad_io), so they are the
examples the SquadEvaluator scored.
"""

from __future__ import annotations

import argparse
import json
import sys

from bertqa.data import squad_io
from bertqa.model.squad_metrics import squad_v1_metrics

DEFAULT_EDGES = (400, 700)  # characters: about 90 and 155 tokens into an English paragraph


def position_part(start: int, edges: tuple[int, ...]) -> str:
    """The label of the part of the paragraph a character offset falls in, e.g. '400-700'."""
    low = 0
    for edge in edges:
        if start < edge:
            return f"{low}-{edge}"
        low = edge
    return f">={low}"


def f1_by_part(examples, runs: dict[str, dict[str, str]], edges: tuple[int, ...]) -> dict[str, dict]:
    """{part: {"questions": n, run: F1 0-100}}: squad_v1_metrics on each part's answerable questions."""
    parts: dict[str, list] = {}
    for example in examples:
        if example.answer_starts:
            parts.setdefault(position_part(example.answer_starts[0], edges), []).append(example)
    labels = [position_part(0, edges)] + [position_part(edge, edges) for edge in edges]
    return {label: {"questions": len(parts[label]),
                    **{name: squad_v1_metrics(parts[label], predictions)["f1"] for name, predictions in runs.items()}}
            for label in labels if label in parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad_file", help="the SQuAD v1.1 file the predictions answer (the eval split)")
    parser.add_argument("runs", nargs="+", metavar="NAME=PREDICTIONS_JSON")
    parser.add_argument("--edges", default=",".join(map(str, DEFAULT_EDGES)),
                        help="character offsets that split the paragraphs (default %(default)s)")
    args = parser.parse_args(argv)
    if any("=" not in run for run in args.runs):
        parser.error("name each run's predictions: NAME=path/to/predictions.json")
    examples, _ = squad_io.read_squad_file(args.squad_file)
    runs = {}
    for run in args.runs:
        name, path = run.split("=", 1)
        with open(path) as f:
            runs[name] = json.load(f)
    edges = tuple(int(edge) for edge in args.edges.split(","))
    names = list(runs)
    print("| answer starts at character | questions | " + " | ".join(f"F1 {name}" for name in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label, row in f1_by_part(examples, runs, edges).items():
        print(f"| {label} | {row['questions']} | " + " | ".join(f"{row[name]:.1f}" for name in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
