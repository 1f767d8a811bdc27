"""The `bertqa` command line.

    bertqa predict --model runs/bertqa/serving/<version>/model.tflite --context "..." --question "..."
    bertqa predict --model <SavedModel dir> --context "..." --question "..." --json
    bertqa run [local_runner options]      # the local pipeline (same as `python local_runner.py`)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def predict(model: str, context: str, question: str, top_k: int = 1) -> list[tuple[str, float]]:
    """(answer, score) pairs from a .tflite (through the Task Library) or a SavedModel (raw-text signature)."""
    if model.endswith(".tflite"):
        from bertqa.task_library import answer_with_task_library

        return answer_with_task_library(model, context, question, top_k=top_k)
    if os.path.isfile(os.path.join(model, "saved_model.pb")):
        from bertqa.serving import load_answerer

        out = load_answerer(model)(question=[question], context=[context])
        return [(out["answer"].numpy()[0].decode("utf-8"), float(out["score"].numpy()[0]))]
    raise SystemExit(f"error: {model}: neither a .tflite file nor a SavedModel directory (no saved_model.pb)")


def _predict_command(args: argparse.Namespace) -> int:
    answers = predict(args.model, args.context, args.question, args.top_k)
    if args.json:
        print(json.dumps({"answers": [{"text": text, "score": score} for text, score in answers]}))
    elif not answers:
        print("(no answer)")
    else:
        for text, score in answers:
            print(f"{text}\t(score {score:.2f})")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        import local_runner

        return local_runner.main(argv[1:])
    parser = argparse.ArgumentParser(prog="bertqa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the local pipeline (see `bertqa run --help`)")
    predict_parser = commands.add_parser("predict", help="answer a question about a context")
    predict_parser.add_argument("--model", required=True, help="a .tflite file or a SavedModel directory")
    predict_parser.add_argument("--context", required=True)
    predict_parser.add_argument("--question", required=True)
    predict_parser.add_argument("--top-k", type=int, default=1)
    predict_parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    return _predict_command(args)


if __name__ == "__main__":
    sys.exit(main())
