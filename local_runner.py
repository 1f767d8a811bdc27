"""Runs the pipeline locally: LocalDagRunner, Beam's DirectRunner (others with --beam-arg), ML Metadata in
SQLite (or on a MySQL/MariaDB server with --metadata-mysql).

    python local_runner.py                      # bundled sample, offline MiniLM default
    python local_runner.py --data-dir my_squad --train-pattern 'train-*.json' --eval-pattern dev.json
    BERTQA_METADATA_PASSWORD=... python local_runner.py --metadata-mysql bertqa@db.internal/bertqa_metadata

Prints exact match and F1 of the run's model and where the blessed .tflite was pushed.
"""

from __future__ import annotations

import os

# Keras 2 (tf-keras) for the whole project; must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline import quiet_startup  # noqa: E402, F401  (before TFX: hides its imports' known-harmless noise)

# isort: split

import argparse  # noqa: E402
import datetime  # noqa: E402
import errno  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from bertqa.operations import metadata_store  # noqa: E402
from pipeline import options  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(HERE, "data", "sample"),
                        help="directory with the SQuAD JSON files (default: the bundled sample)")
    parser.add_argument("--train-pattern", default="train.json")
    parser.add_argument("--eval-pattern", default="eval.json",
                        help="'' to hash-split the train files by article title instead")
    parser.add_argument("--span", type=int, default=None,
                        help="with {SPAN} in the patterns (e.g. 'span-{SPAN}/train.json'): read this span "
                             "(default: the latest span that every split has)")
    parser.add_argument("--version-2-with-negative", action="store_true", help="SQuAD 2.0 data")
    parser.add_argument("--strict", action="store_true", help="fail on misaligned answers instead of repairing")
    options.add_spec_args(parser)
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=None, help="overrides --epochs")
    parser.add_argument("--budget-minutes", type=float, default=None, metavar="MINUTES",
                        help="the Trainer's wall-clock limit: it stops and exports when MINUTES of training have "
                             "passed, with warmup and learning-rate decay sized to them (--epochs / --train-steps "
                             "stay the upper bound)")
    options.add_matmul_dtype_arg(parser)
    options.add_xla_arg(parser)
    parser.add_argument("--train-workers", type=options.positive_int, default=1, metavar="N",
                        help="train in N worker processes on this machine's loopback (MultiWorkerMirroredStrategy, "
                             "each replica on its slice of every global batch): the multi-worker path on one "
                             "machine, not a speed-up; see docs/scaling.md")
    options.add_tuning_args(parser)
    parser.add_argument("--checkpoint-every-minutes", type=float, default=5.0, metavar="MINUTES",
                        help="the Trainer saves a resume checkpoint this often (a killed run resumes from the "
                             "latest one when started again; default 5)")
    parser.add_argument("--checkpoint-every-steps", type=int, default=None, metavar="STEPS",
                        help="... and every STEPS steps too")
    parser.add_argument("--min-f1", type=float, default=40.0, help="F1 (0-100) a model needs to be blessed")
    parser.add_argument("--quantization", default=None, metavar="VARIANTS", type=options.variants_arg,
                        help="TFLite variants to export, score and bless, comma-separated from none, dynamic, "
                             "float16, int8, or 'all' (default: dynamic only, to keep the run fast; see "
                             "--push-order for the variants exported when it misses its limit)")
    options.add_push_rule_args(parser)
    parser.add_argument("--max-f1-drop", action="append", default=[], metavar="VARIANT=POINTS", type=options.limit_arg,
                        help="largest F1 drop against the SavedModel that still blesses a variant "
                             "(repeatable; defaults: none 0.2, dynamic 1.0, float16 0.2, int8 2.0)")
    parser.add_argument("--max-f1-regression", type=float, default=0.0, metavar="POINTS",
                        help="how many F1 points below the last pushed model (the baseline, scored on this run's "
                             "eval split) a new model may be and still be pushed (default 0)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="judge on --min-f1 alone and train from the pretrained weights: ignore what was pushed")
    parser.add_argument("--cold-start", action="store_true",
                        help="train from the pretrained weights instead of warm-starting from the last pushed model")
    parser.add_argument("--runs-dir", default=os.path.join(HERE, "runs"))
    parser.add_argument("--pipeline-name", default="bertqa")
    parser.add_argument("--beam-mode", default="in_process", choices=sorted(options.BEAM_MODES),
                        help="the DirectRunner's mode (default in_process); ignored when a --beam-arg names a runner")
    parser.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                        help="a Beam pipeline argument for every Beam component, with '=': "
                             "--beam-arg=--runner=PortableRunner (repeatable; appended to --beam-mode's flags, which "
                             "are left out when one names a --runner); see docs/scaling-beam.md")
    parser.add_argument("--no-cache", action="store_true", help="re-run every component")
    metadata_store.add_metadata_server_arg(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    options.check_xla_args(parser, args)
    return args


def build_config(args: argparse.Namespace):
    from components.tflite_exporter import core as exporter
    from pipeline.pipeline import PipelineConfig

    variants = args.quantization or exporter.DEFAULT_VARIANTS

    spec = options.spec_from_args(args)
    root = os.path.abspath(args.runs_dir)
    return PipelineConfig(
        pipeline_name=args.pipeline_name,
        pipeline_root=os.path.join(root, args.pipeline_name, "artifacts"),
        data_root=os.path.abspath(args.data_dir),
        serving_dir=os.path.join(root, args.pipeline_name, "serving"),
        spec=spec,
        train_pattern=args.train_pattern,
        eval_pattern=args.eval_pattern or None,
        span=args.span,
        version_2_with_negative=args.version_2_with_negative,
        strict=args.strict,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_steps=args.train_steps,
        train_budget_minutes=args.budget_minutes,
        train_matmul_dtype=args.matmul_dtype,
        train_xla=args.xla,
        train_data_start_batch=args.data_start_batch,
        train_workers=args.train_workers,
        tuning=options.tuning_config(args),
        checkpoint_every_steps=args.checkpoint_every_steps,
        checkpoint_every_minutes=args.checkpoint_every_minutes,
        min_f1=args.min_f1,
        compare_with_baseline=not args.no_baseline,
        max_f1_regression=args.max_f1_regression,
        cold_start=args.cold_start or args.no_baseline,
        tflite_variants=variants,
        tflite_push_order=args.push_order or exporter.DEFAULT_PUSH_ORDER,
        tflite_task_library_f1=args.task_library_f1,
        max_f1_drop=dict(args.max_f1_drop),
        enable_cache=not args.no_cache,
        beam_pipeline_args=options.beam_pipeline_args(args),
        metadata_server=args.metadata_mysql)


def metadata_path(config) -> str:
    return os.path.join(os.path.dirname(config.pipeline_root), "metadata.sqlite")


def metadata_location(config) -> metadata_store.SqliteStore | metadata_store.MySqlStore:
    """Where this run's ML Metadata lives: the server of --metadata-mysql, else the runs directory's file."""
    return config.metadata_server or metadata_store.SqliteStore(metadata_path(config))


def check_input(config) -> int:
    """The span this run reads (0 without {SPAN}); a missing or uneven span stops it here, with
    one clear message, rather than in TFX's driver with a traceback."""
    from bertqa.operations import base_model
    from components.squad_example_gen.component import resolve_spans
    from pipeline.pipeline import input_config, range_config

    span = resolve_spans(config.data_root, input_config(config), range_config(config))[1]
    base_model.for_spec(config.spec)  # a base that cannot start this model stops the run here, in one line
    return span


def run(config) -> str:
    """Runs the pipeline; returns its run id. The caller holds the runs directory's lock
    (bertqa.operations.run_lock)."""
    from tfx import v1 as tfx
    from tfx.dsl.compiler import compiler, constants
    from tfx.orchestration.portable import runtime_parameter_utils

    from pipeline.pipeline import create_pipeline

    check_input(config)
    location = metadata_location(config)
    metadata_store.keep_password_out_of_logs(location)
    run_dir = os.path.dirname(metadata_path(config))
    os.makedirs(run_dir, exist_ok=True)
    if location.exists():
        interrupted = metadata_store.mark_interrupted_executions(location, metadata_store.started_runs(run_dir))
        if interrupted:
            logging.info("executions %s of an earlier run never completed (the run was killed); marked CANCELED",
                         interrupted)
    # The run id names the run's pipeline_run context in ML Metadata. TFX's LocalDagRunner makes
    # the same (the start time) when none is set; setting it here lets a shared server's store
    # tell this runs directory's runs from other machines' (mark_interrupted_executions).
    run_id = datetime.datetime.now().isoformat()
    if location.shared:
        metadata_store.record_started_run(run_dir, run_id)
    connection = location.connection_config(readonly=False)
    pipeline_ir = compiler.Compiler().compile(create_pipeline(config, connection))
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline_ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    tfx.orchestration.LocalDagRunner().run_with_ir(pipeline_ir)
    return run_id


# errno values that mean the runs directory, not the data or the model, stopped the run.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}
_STORAGE_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                     "Read-only file system": errno.EROFS,
                     # SQLite's words, from the ML Metadata store in the runs directory.
                     "database or disk is full": errno.ENOSPC}


def user_error(error: BaseException) -> BaseException | None:
    """The data or model error inside whatever the orchestrator wrapped it in, if there is one."""
    from bertqa.data.squad_io import SquadDataError
    from bertqa.model.checkpoint import CheckpointError

    while error is not None:
        if isinstance(error, (SquadDataError, CheckpointError)):
            return error
        error = error.__cause__ or error.__context__
    return None


def storage_error(error: BaseException, runs_dir: str) -> str | None:
    """One message when a full, read-only or unwritable disk stopped the run, else None.

    The error arrives wrapped by Beam or TFX, and TensorFlow's file system reports it as its
    own error type with the OS's words in the message, so both the chain of causes and the
    messages are searched.
    """
    from bertqa.operations.run_lock import writable_dir_problem

    while error is not None:
        if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
            return writable_dir_problem(runs_dir, error)
        for words, number in _STORAGE_MESSAGES.items():
            if words in str(error):
                return writable_dir_problem(runs_dir, OSError(number, words))
        error = error.__cause__ or error.__context__
    return None


# What ML Metadata's MySQL client says when its server went away in the middle of a run.
_SERVER_LOST_WORDS = ("mysql_real_connect failed", "MySQL server has gone away", "Lost connection to",
                      "Can't connect to MySQL server", "Can't connect to server")


def server_lost(error: BaseException, location) -> str | None:
    """One message when the ML Metadata server stopped answering during the run, else None."""
    if not isinstance(location, metadata_store.MySqlStore):
        return None
    while error is not None:
        if any(words in str(error) for words in _SERVER_LOST_WORDS):
            return metadata_store.unreachable_message(
                location, "it stopped answering during the run, which ended there: what the run had not "
                "recorded yet was neither blessed nor pushed; run again once the server is back, and the "
                "components that completed come from the cache")
        error = error.__cause__ or error.__context__
    return None


def failure_message(error: BaseException, runs_dir: str, location=None) -> str | None:
    """The one line for a run stopped by its data, its model, its runs directory or its metadata server;
    None for anything else (a bug, whose traceback the caller lets through)."""
    from bertqa.operations.run_lock import RunsDirError

    if isinstance(error, RunsDirError):
        return error.strerror
    if isinstance(error, metadata_store.MetadataStoreError):
        return str(error)
    cause = user_error(error)
    if cause is not None:
        return str(cause)
    return server_lost(error, location) or storage_error(error, os.path.abspath(runs_dir))


def summary(config, run_id: str | None = None) -> str:
    """What the run `run_id` (None: the latest in the runs directory's own store) ended with."""
    store = metadata_store.run_store(metadata_location(config), run_id)
    lines = []
    evaluation = metadata_store.latest_artifact(store, "ModelEvaluation")
    if evaluation is not None:
        props = metadata_store.custom_properties(evaluation)
        if "exact_match" in props:  # SQuAD v1.1 keys
            lines.append(f"exact_match: {props['exact_match']:.2f}  f1: {props['f1']:.2f}  "
                         "(SQuAD v1.1 definitions, 0-100, eval split)")
        else:  # SQuAD 2.0 keys
            threshold = props.get("null_score_diff_threshold")
            tuned = f", null threshold {threshold:.2f} tuned on it" if threshold is not None else ""
            lines.append(f"exact: {props.get('exact', float('nan')):.2f}  f1: {props.get('f1', float('nan')):.2f}  "
                         f"(SQuAD 2.0 definitions, 0-100, eval split{tuned})")
    evaluator_blessings = [a for a in store.get_artifacts_by_type("ModelBlessing")
                           if metadata_store.producer_component(store, a.id) == "SquadEvaluator"]
    if evaluator_blessings:
        props = metadata_store.custom_properties(max(evaluator_blessings, key=lambda a: a.id))
        verdict = "blessed" if props.get("blessed") else "not blessed"
        lines.append(f"SquadEvaluator: {verdict} ({props.get('reason', '')})")
    blessing = metadata_store.latest_artifact(store, "ModelBlessing")
    if blessing is not None:
        props = metadata_store.custom_properties(blessing)
        lines.append(f"blessed: {bool(props.get('blessed'))} ({props.get('reason', '')})")
    lines.extend(_variant_lines(store))
    pushed = metadata_store.latest_artifact(store, "PushedModel")
    if pushed is not None and metadata_store.custom_properties(pushed).get("pushed"):
        destination = metadata_store.custom_properties(pushed).get("pushed_destination", "")
        lines.append(f"pushed: {os.path.join(destination, 'model.tflite')}")
    else:
        lines.append("pushed: nothing (model not blessed)")
    report = metadata_store.latest_artifact(store, "bertqa_artifacts.RunReport")
    if report is not None and metadata_store.custom_properties(report).get("report"):
        lines.append(f"report: {metadata_store.custom_properties(report)['report']}")
    return "\n".join(lines)


def _variant_lines(store) -> list[str]:
    """One line per TFLite variant of the latest export: size, latency, metrics, Task Library, verdict."""
    exports = [a for a in store.get_artifacts_by_type("Model")
               if metadata_store.producer_component(store, a.id) == "TFLiteExporter"]
    if not exports:
        return []
    props = metadata_store.custom_properties(max(exports, key=lambda a: a.id))
    lines = []
    for variant in filter(None, str(props.get("variants", "")).split(",")):
        v = {key[len(variant) + 1:]: value for key, value in props.items() if key.startswith(f"{variant}_")}
        task_library = "ok" if v.get("task_library_ok") else f"NOT ok ({v.get('task_library_problems', '')})"
        in_task_library = (f"{v['task_library_ms_1_thread']:.0f} ms in the Task Library, "
                           if "task_library_ms_1_thread" in v else "")
        # The runtime the file was scored, timed and inspected in (runs before LiteRT: TF's interpreter).
        runtime_name = {"litert": "LiteRT", "tensorflow": "TF interpreter"}.get(
            str(v.get("tflite_runtime", "tensorflow")), str(v.get("tflite_runtime")))
        xnnpack = ""
        if v.get("dynamic_tensors") and runtime_name != "LiteRT":
            xnnpack = "XNNPACK off (dynamic-sized tensors), "
        elif "xnnpack_ops" in v:
            xnnpack = f"XNNPACK {v['xnnpack_delegated_ops']}/{v['xnnpack_ops']} ops, "
        # Per question at its own length (median, 90th percentile), beside one 384-token window.
        per_question = (f"{runtime_name} {v['question_ms_median_1_thread']:.1f} ms/question median, "
                        f"{v['question_ms_p90_1_thread']:.1f} p90 (1 thread), "
                        if "question_ms_median_1_thread" in v else f"{runtime_name} ")
        memory = f"{v['memory_mb']:.0f} MB loaded, " if "memory_mb" in v else ""
        lines.append(f"tflite {variant}: {v.get('size_bytes', 0) / 1e6:.1f} MB, "
                     f"{per_question}{v.get('latency_ms_1_thread', float('nan')):.0f} ms at 384 tokens, {memory}"
                     f"{in_task_library}{xnnpack}"
                     f"exact_match {v.get('exact_match', float('nan')):.2f} f1 {v.get('f1', float('nan')):.2f} "
                     f"(drop {v.get('f1_drop', float('nan')):+.2f}, limit {v.get('max_f1_drop', float('nan')):.1f}), "
                     f"Task Library {task_library}{_task_library_score(v)}, "
                     f"{'blessed' if v.get('blessed') else 'not blessed'}")
    if props.get("pushed_variants"):
        lines.append(f"pushed variants: {props['pushed_variants']}")
    if props.get("push_reason"):  # the push rule: which variant is model.tflite and why (or why none is)
        lines.append(f"push rule: {props['push_reason']}")
    return lines


def _task_library_score(variant_props: dict) -> str:
    """', f1 61.36 in it (answers as LiteRT for 95.0% of questions)' when the run scored the Task Library."""
    if "task_library_f1" not in variant_props:
        return ""
    return (f", f1 {variant_props['task_library_f1']:.2f} in it (answers as LiteRT for "
            f"{100 * variant_props.get('task_library_agreement', float('nan')):.1f}% of questions)")


EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3


def main(argv=None) -> int:
    from bertqa.operations import run_lock

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        # The lock first, before TensorFlow is imported: a second run learns at once that it must not start.
        with run_lock.runs_lock(run_lock.lock_path(args.runs_dir, args.pipeline_name)):
            config = build_config(args)
            run_id = run(config)
    except run_lock.RunsLocked as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except Exception as error:  # noqa: BLE001 (reported below, or re-raised)
        message = failure_message(error, args.runs_dir, args.metadata_mysql)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary(config, run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
