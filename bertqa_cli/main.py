"""The `bertqa` command line (the console script `bertqa` runs main()).

    bertqa predict --model runs/bertqa/serving/<version>/model.tflite --context "..." --question "..."
                   [--runtime litert|task-library]     # a .tflite: LiteRT (default) or the Task Library
    bertqa predict --model <SavedModel dir> --context "..." --question "..." --json
    bertqa evaluate --model <.tflite or SavedModel dir> --data dev.json [--threads N] [--batch-size N]
                    [--runtime litert|tensorflow|task-library]   # a .tflite's runtime (default LiteRT)
    bertqa export --model <SavedModel dir> --output-dir D --quantization dynamic|float16|int8|none [--data train.json]
    bertqa run [local_runner options]      # the local pipeline (same as `python local_runner.py`)
    bertqa retrain --data-dir D [--span N]  # one scheduled retraining step (see bertqa_cli.retrain)
    bertqa lineage [VERSION | model.tflite] [--json]   # what a pushed model came from (ML Metadata)
    bertqa kfp compile|run|schedule ...      # Kubeflow Pipelines (see bertqa_cli.kfp_client)
    bertqa serve [--runs-dir runs] [--port 8765]   # a local page and JSON API over the pushed versions

`evaluate` prints one JSON object, the official SQuAD metrics on 0-100 ({"exact_match", "f1"}
for SQuAD 1.1 data); `export` prints one JSON object describing the file it wrote. Progress
bars and logs go to stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

DEFAULT_SAVED_MODEL_SEQ_LEN = 384


PREDICT_RUNTIMES = ("litert", "task-library")
EVALUATE_RUNTIMES = ("litert", "tensorflow", "task-library")


def predict(model: str, context: str, question: str, top_k: int = 1,
            runtime: str = "litert", vocab: str | None = None) -> list[tuple[str, float]]:
    """(answer, score) pairs from a .tflite (in LiteRT, or the Task Library) or a SavedModel (raw-text signature).

    LiteRT runs what an app on LiteRT runs (bertqa.on_device.litert_answerer: this project's
    tokenizer and span decoding around the interpreter; `vocab` None: the one packed in the file);
    `runtime="task-library"` asks the Task Library's BertQuestionAnswerer. The model is checked
    first (bertqa.on_device.model_files): a file that is missing, damaged or of another model
    raises ModelFileError instead of reaching TFLite, which could crash on it.
    """
    from bertqa.on_device import model_files

    if runtime not in PREDICT_RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; one of {PREDICT_RUNTIMES}")
    kind, path = model_files.model_kind(model)
    if kind == "tflite" and runtime == "litert":
        from bertqa.on_device.litert_answerer import LiteRtAnswerer

        model_files.check_tflite_for_evaluation(path, vocab_given=bool(vocab))
        try:
            answerer = LiteRtAnswerer(path, vocab_path=vocab)
        except (ValueError, RuntimeError) as error:
            raise model_files.ModelFileError(
                f"{path}: LiteRT cannot load this model ({error}). Export it again with `bertqa export`.") from error
        return answerer.answer(context, question, top_k)
    if kind == "tflite":
        from bertqa.on_device.task_library import answers_from, create_question_answerer

        model_files.check_tflite_for_task_library(path)
        try:
            answerer = create_question_answerer(path)
        except (ValueError, RuntimeError) as error:
            raise model_files.ModelFileError(
                f"{path}: the Task Library's BertQuestionAnswerer cannot load this model ({error}). "
                "Export it again with `bertqa export`.") from error
        return answers_from(answerer, context, question, top_k)
    model_files.check_saved_model(path, model_files.SERVING_SIGNATURE)
    import tensorflow as tf

    from bertqa.model.serving import load_answerer

    try:
        answerer = load_answerer(path)
    except (tf.errors.OpError, OSError, ValueError, KeyError) as error:
        raise model_files.saved_model_load_error(path, error) from error
    out = answerer(question=[question], context=[context])
    return [(out["answer"].numpy()[0].decode("utf-8"), float(out["score"].numpy()[0]))]


def _predict_command(args: argparse.Namespace) -> int:
    answers = predict(args.model, args.context, args.question, args.top_k, args.runtime, args.vocab)
    if args.json:
        print(json.dumps({"answers": [{"text": text, "score": score} for text, score in answers]}))
    elif not answers:
        print("(no answer)")
    else:
        for text, score in answers:
            print(f"{text}\t(score {score:.2f})")
    return 0


def _window_config(args: argparse.Namespace, seq_len: int):
    from bertqa.data.windowing import WindowConfig

    return WindowConfig(seq_len=seq_len, query_len=args.query_len, doc_stride=args.doc_stride)


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    """SQuAD metrics of a .tflite (batched, multi-threaded) or a SavedModel (its `logits` signature)."""
    from bertqa.on_device import model_files

    # The model is checked before TensorFlow is imported: a bad .tflite is refused at once, and
    # never reaches the TFLite interpreter, which segfaults on a truncated file.
    kind, model = model_files.model_kind(args.model)
    if kind == "tflite":
        model_files.check_tflite_for_evaluation(model, vocab_given=bool(args.vocab))
    else:
        model_files.check_saved_model(model, model_files.LOGITS_SIGNATURE)

    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.model import evaluation
    from bertqa.on_device import runtime, scoring, task_metadata

    if kind == "saved_model" and args.threads:
        import tensorflow as tf

        # Before the first TensorFlow op (the tokenizer's): the runtime fixes its thread pools then.
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    config = evaluation.EvalConfig(version_2_with_negative=args.version_2_with_negative)
    with tempfile.TemporaryDirectory() as scratch:
        if kind == "tflite":
            seq_len = runtime.TfliteQaRunner(model, num_threads=1).seq_len
            vocab = args.vocab or task_metadata.unpack_vocab(model, scratch)
        else:
            seq_len = args.seq_len or DEFAULT_SAVED_MODEL_SEQ_LEN
            vocab = args.vocab or task_metadata.saved_model_vocab_path(model)
        examples, windows = evaluation.squad_file_windows(
            args.data, TokenizerConfig(vocab, not args.cased), _window_config(args, seq_len),
            args.version_2_with_negative)
    if kind == "tflite" and args.runtime == "task-library":
        if args.version_2_with_negative:
            raise ValueError("the Task Library always answers: it cannot be scored on SQuAD 2.0 data; "
                             "use --runtime litert")
        result = scoring.evaluate_with_task_library(model, examples, config)
    elif kind == "tflite":
        result = scoring.evaluate_tflite(model, examples, windows, config, num_threads=args.threads,
                                         batch_size=args.batch_size or scoring.DEFAULT_TFLITE_BATCH_SIZE,
                                         runtime=args.runtime)
    else:
        if args.batch_size:
            config = dataclasses.replace(config, batch_size=args.batch_size)
        import tensorflow as tf

        try:
            logits_fn = evaluation.saved_model_logits_fn(model)
        except (tf.errors.OpError, OSError, KeyError) as error:
            raise model_files.saved_model_load_error(model, error) from error
        with evaluation.progress_bar(len(windows), "evaluating SavedModel") as progress:
            result = evaluation.evaluate(logits_fn, examples, windows, config, progress=progress)
    # numpy scalars -> Python numbers, for json.dumps
    return {key: value.item() if hasattr(value, "item") else value for key, value in result.metrics.items()}


def export(args: argparse.Namespace) -> dict:
    """One quantization variant of a SavedModel, written as the pipeline's TFLiteExporter writes it."""
    import shutil

    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.model import evaluation
    from bertqa.on_device import conversion, model_files, task_metadata
    from components.tflite_exporter import core

    kind, model = model_files.model_kind(args.model)
    if kind != "saved_model":
        raise model_files.ModelFileError(f"{args.model}: export needs a SavedModel directory (with saved_model.pb), "
                                         "not a .tflite. Give the trainer's SavedModel directory.")
    if args.quantization == "int8" and not args.data:
        raise SystemExit("error: int8 quantization calibrates on training windows: give --data train.json")
    vocab = args.vocab or task_metadata.saved_model_vocab_path(model)
    seq_len = args.seq_len or DEFAULT_SAVED_MODEL_SEQ_LEN
    representative = []
    if args.quantization == "int8":
        _, windows = evaluation.squad_file_windows(args.data, TokenizerConfig(vocab, not args.cased),
                                                   _window_config(args, seq_len), args.version_2_with_negative,
                                                   is_training=True)
        representative = core.representative_windows(windows, args.representative_steps)
    # The file gets a signature for each length the Trainer exported an on-device signature for.
    config = conversion.with_saved_model_lengths(
        conversion.TfliteExportConfig(seq_len=seq_len, query_len=args.query_len, do_lower_case=not args.cased), model)
    os.makedirs(args.output_dir, exist_ok=True)
    # The dynamic-range file keeps the name apps load (model.tflite), as Model Maker's export did.
    default_name = core.PUSHED_FILE if args.quantization == "dynamic" else core.FILE_NAMES[args.quantization]
    path = os.path.join(args.output_dir, args.filename or default_name)
    result = core.export_variant(model, vocab, path, args.quantization, config, representative,
                                 args.representative_steps)
    shutil.copyfile(vocab, os.path.join(args.output_dir, core.VOCAB_FILE))
    return {"path": result.path, "quantization": args.quantization, "size_bytes": result.size_bytes,
            "task_library_ok": not result.warnings, "task_library_problems": list(result.warnings)}


def _add_tokenizer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("how the data is windowed (defaults: the model's, else the Task Library's)")
    group.add_argument("--vocab", default=None,
                       help="vocab.txt (default: packed in the .tflite, or the SavedModel's assets/vocab.txt)")
    group.add_argument("--cased", action="store_true", help="the model was trained on cased text")
    group.add_argument("--seq-len", type=int, default=None,
                       help=f"SavedModel window length (default {DEFAULT_SAVED_MODEL_SEQ_LEN}; a .tflite's is its own)")
    group.add_argument("--query-len", type=int, default=64)
    group.add_argument("--doc-stride", type=int, default=128)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertqa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the local pipeline (see `bertqa run --help`)")
    commands.add_parser("retrain", help="retrain on the latest (or a given) span; a scheduler calls this")
    commands.add_parser("base-model", help="train a QA-tuned base on SQuAD, in resumable calls, for --init-from")
    commands.add_parser("lineage", help="which data, settings and baseline produced a pushed model")
    commands.add_parser("kfp", help="compile, submit or schedule the pipeline on Kubeflow Pipelines")
    commands.add_parser("report", help="regenerate a run's HTML report from ML Metadata (bertqa report RUN_DIR)")
    commands.add_parser("serve", help="a local web page and JSON API over the pushed versions (bertqa serve --help)")
    predict_parser = commands.add_parser("predict", help="answer a question about a context")
    predict_parser.add_argument("--model", required=True, help="a .tflite file or a SavedModel directory")
    predict_parser.add_argument("--context", required=True)
    predict_parser.add_argument("--question", required=True)
    predict_parser.add_argument("--top-k", type=_positive, default=1)
    predict_parser.add_argument("--json", action="store_true", help="print one JSON object")
    predict_parser.add_argument("--runtime", choices=PREDICT_RUNTIMES, default="litert",
                                help="what runs a .tflite: LiteRT, with this project's tokenizer and span decoding "
                                     "(default), or the Task Library's BertQuestionAnswerer")
    predict_parser.add_argument("--vocab", default=None,
                                help="vocab.txt for --runtime litert (default: the one packed in the .tflite)")

    evaluate_parser = commands.add_parser("evaluate", help="SQuAD exact match and F1 of a model on a SQuAD file")
    evaluate_parser.add_argument("--model", required=True, help="a .tflite file or a SavedModel directory")
    evaluate_parser.add_argument("--data", required=True, help="SQuAD JSON with gold answers")
    evaluate_parser.add_argument("--version-2-with-negative", action="store_true", help="SQuAD 2.0 data")
    evaluate_parser.add_argument("--threads", type=_positive, default=None, help="CPU threads (default: every CPU)")
    evaluate_parser.add_argument("--runtime", choices=EVALUATE_RUNTIMES, default="litert",
                                 help="what runs a .tflite: LiteRT (default), TensorFlow's interpreter, or the "
                                      "Task Library (one answer() per question, its own tokenizer and window)")
    evaluate_parser.add_argument("--batch-size", type=_positive, default=None,
                                 help="windows per run (default: 8 for .tflite, 32 for a SavedModel)")
    _add_tokenizer_options(evaluate_parser)

    export_parser = commands.add_parser("export", help="a SavedModel as a .tflite for the Task Library")
    export_parser.add_argument("--model", required=True, help="a SavedModel directory (the trainer's)")
    export_parser.add_argument("--output-dir", required=True)
    export_parser.add_argument("--quantization", default="dynamic", choices=["dynamic", "float16", "int8", "none"])
    export_parser.add_argument("--data", default=None, help="SQuAD JSON (training data) to calibrate int8 on")
    export_parser.add_argument("--representative-steps", type=_positive, default=100,
                               help="windows int8 calibration reads (default 100)")
    export_parser.add_argument("--filename", default=None,
                               help="file name (default: model.tflite for dynamic, model_<variant>.tflite otherwise)")
    export_parser.add_argument("--version-2-with-negative", action="store_true", help="SQuAD 2.0 --data")
    _add_tokenizer_options(export_parser)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        import local_runner

        return local_runner.main(argv[1:])
    # Commands with parsers of their own, in their own modules.
    if argv and argv[0] == "retrain":
        from bertqa_cli import retrain

        return retrain.main(argv[1:])
    if argv and argv[0] == "base-model":
        from bertqa_cli import base_model

        return base_model.main(argv[1:])
    if argv and argv[0] == "lineage":
        from bertqa.operations import lineage

        return lineage.main(argv[1:])
    if argv and argv[0] == "kfp":
        from bertqa_cli import kfp_client

        return kfp_client.main(argv[1:])
    if argv and argv[0] == "report":
        from bertqa_cli import report

        return report.main(argv[1:])
    if argv and argv[0] == "serve":
        from bertqa_cli import serve

        return serve.main(argv[1:])
    args = _build_parser().parse_args(argv)
    from bertqa.on_device.model_files import ModelFileError

    if args.command == "predict":
        try:
            return _predict_command(args)
        except ModelFileError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    # Logs on stderr: stdout carries only the one JSON object.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    # bertqa.data.squad_io's SquadDataError is a ValueError; not imported here, since squad_io imports
    # TensorFlow and a bad --model is refused before anything does.
    try:
        result = evaluate(args) if args.command == "evaluate" else export(args)
    except (ModelFileError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
