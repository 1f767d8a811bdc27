"""`bertqa retrain`: one step of scheduled retraining, the command a cron line or timer calls.

    bertqa retrain --data-dir /data/squad --runs-dir /srv/bertqa/runs       # the latest span
    bertqa retrain --data-dir /data/squad --span 7 [--force] [--cold-start]

New labelled data arrives as a new span: DATA_DIR/span-N/train.json and span-N/eval.json
(the patterns are --train-pattern / --eval-pattern, with {SPAN}). One retrain:

1. takes the runs directory's lock (bertqa.operations.run_lock, shared with `bertqa run` and `make run`),
   so a second retrain or run started meanwhile exits at once (status 3) with a message
   naming the holder;
2. resolves the span (the latest that every split has, or --span); a missing or uneven
   span stops it with one message (status 2);
3. does nothing when the latest pushed model was already trained on this span and its
   files are unchanged (unless --force, which also re-runs every component);
4. runs the local pipeline: warm start from the latest pushed model, SquadEvaluator
   scores the new model and that baseline on this span's eval split and blesses it only
   if it is not worse (--max-f1-regression), TFLiteExporter, Pusher;
5. prints one summary line: span, candidate F1, baseline F1, delta, pushed or not and why.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from bertqa.operations.run_lock import RunsLocked, lock_path, runs_lock  # noqa: E402

EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
DEFAULT_TRAIN_PATTERN = "span-{SPAN}/train.json"
DEFAULT_EVAL_PATTERN = "span-{SPAN}/eval.json"


@dataclasses.dataclass(frozen=True)
class Outcome:
    span: int
    pushed: bool
    line: str


def parse_args(argv=None):
    import local_runner

    parser = local_runner.build_parser(__doc__)
    parser.set_defaults(train_pattern=DEFAULT_TRAIN_PATTERN, eval_pattern=DEFAULT_EVAL_PATTERN)
    parser.add_argument("--force", action="store_true",
                        help="retrain even if the latest pushed model was trained on this span (re-runs every "
                             "component)")
    args = parser.parse_args(argv)
    if args.force:
        args.no_cache = True
    return args


def already_trained(config, span: int):
    """The latest pushed model, if it was trained on this very span with these very files."""
    from bertqa.operations import pushed_models
    from components.squad_example_gen.component import resolve_spans
    from pipeline.pipeline import input_config, range_config

    latest = pushed_models.latest_pushed(config.serving_dir)
    if latest is None or latest.span != span:
        return None
    fingerprint = resolve_spans(config.data_root, input_config(config),
                                range_config(dataclasses.replace(config, span=span)))[3]
    return latest if latest.record.get("input_fingerprint") == fingerprint else None


def _fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def outcome_line(store, config, span: int, since_artifact_id: int, seconds: float) -> Outcome:
    """The summary of the run whose artifacts have ids above `since_artifact_id`."""
    from bertqa.operations import metadata_store

    def newest(type_name: str, producer: str | None = None):
        found = [a for a in store.get_artifacts_by_type(type_name) if a.id > since_artifact_id
                 and (producer is None or metadata_store.producer_component(store, a.id) == producer)]
        return metadata_store.custom_properties(max(found, key=lambda a: a.id)) if found else {}

    verdict = newest("ModelBlessing", "SquadEvaluator")
    exporter = newest("ModelBlessing", "TFLiteExporter")
    pushed = newest("PushedModel")
    if not verdict:
        return Outcome(span=span, pushed=False, line=(
            f"retrain: span {span}  nothing new: every component came from the cache (an earlier run of this "
            f"span with these settings); --force re-runs  ({seconds:.0f} s)"))
    baseline = (f"baseline f1 {_fmt(verdict.get('baseline_f1'))} (version {verdict['baseline_version']}, "
                f"span {verdict.get('baseline_span', '?')})" if "baseline_version" in verdict else "baseline none")
    if pushed.get("pushed"):
        result = f"pushed {pushed.get('pushed_destination')}"
    elif not verdict.get("blessed"):
        result = f"not pushed: {verdict.get('reason', 'not blessed')}"
    else:
        result = f"not pushed: {exporter.get('reason', 'the TFLite export was not blessed')}"
    line = (f"retrain: span {span}  candidate f1 {_fmt(verdict.get('f1'))}  {baseline}  "
            f"delta {_fmt(verdict.get('f1_delta'), '+.2f')}  {result}  ({seconds:.0f} s)")
    return Outcome(span=span, pushed=bool(pushed.get("pushed")), line=line)


def retrain(args) -> Outcome:
    import local_runner
    from bertqa.operations import metadata_store

    started = time.monotonic()
    # The lock first, before TensorFlow is imported: a second retrain learns at once that it must not run.
    with runs_lock(lock_path(args.runs_dir, args.pipeline_name)):
        config = local_runner.build_config(args)
        span = local_runner.check_input(config)
        if not args.force:
            trained = already_trained(config, span)
            if trained is not None:
                return Outcome(span=span, pushed=False, line=(
                    f"retrain: span {span}  already trained: pushed version {trained.version} "
                    f"(f1 {_fmt(trained.f1)}) was trained on these files; nothing to do (--force retrains)"))
        # Pin the span that was checked: data landing meanwhile waits for the next retrain.
        config = dataclasses.replace(config, span=span)
        location = local_runner.metadata_location(config)
        since = 0
        if location.exists():
            since = max((a.id for a in metadata_store.open_store(location).get_artifacts()), default=0)
        run_id = local_runner.run(config)
        return outcome_line(metadata_store.run_store(location, run_id), config, span, since,
                            time.monotonic() - started)


def main(argv=None) -> int:
    import local_runner

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        outcome = retrain(args)
    except RunsLocked as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except Exception as error:  # noqa: BLE001 (reported below, or re-raised)
        message = local_runner.failure_message(error, args.runs_dir, args.metadata_mysql)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(outcome.line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
