"""`bertqa base-model`: a QA-tuned base trained on SQuAD, spent in pieces; what `--init-from` takes.

    bertqa base-model --squad-file train-v1.1.json --hours 1      # the first hour
    bertqa base-model --squad-file train-v1.1.json --hours 1      # the second: resumes the first
    make base-model SQUAD_FILE=train-v1.1.json HOURS=1            # the same, with the one-hour recipe

The offline counterpart of Model Maker's `mobilebert_qa_squad` (a model already fine-tuned on
SQuAD 1.1, which the seed's tutorial adapts to its own data): with no model hub to download one
from, a base is trained here once, over as many calls as the hours allow, and every later run on a
user's own data starts from it (`--init-from RUNS_DIR/bertqa/serving/<version>`).

Each call is one run of the local pipeline in the base's runs directory (default runs/base):

1. The SQuAD file is split by article (bertqa.data.article_split): by default the last 14
   articles are held out of training, their first 8 paragraphs as the eval split the pipeline
   blesses on (the 582 questions of data/sample/eval.json), the other paragraphs as heldout.json
   (2,146 questions), which nothing trains, tunes or blesses on. The split is written once; a
   later call with another file is refused (the base would mix two training sets).
2. The Trainer starts from the base's last pushed version (`--init-from`, so the ML Metadata
   lineage of each version names the one before it) and takes the seeded window order up where
   the last call stopped (`--data-start-batch`): three one-hour calls see the windows one long
   call would. Its learning rate warms up and decays to zero within each call (a warm restart,
   as SGDR's schedule): every call ends with a finished model that `--init-from` can take. A call
   after the first peaks at half the rate (--later-rate-scale): a restart at the full peak undid
   much of the call before it (benchmarks/RESULTS.md, "A QA-tuned base at batch 16").
3. The model is judged on --min-f1 alone (`--no-baseline`), pushed, and scored on heldout.json
   (the SavedModel and the pushed model.tflite). RUNS_DIR/base_model.json records each call: its
   version, hours, steps, the batches of the window order it took, and its held-out F1.

A call killed mid-training resumes from its Trainer's checkpoints when called again with the same
arguments. Every option of `bertqa run` (the recipe, --spec, --xla, ...) passes through, except
those this command sets itself.
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
import pathlib  # noqa: E402
import sys  # noqa: E402

from bertqa.data import article_split  # noqa: E402

STATE_FILE = "base_model.json"
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
# Options this command sets from its own state; given by hand they would break the resume.
SET_HERE = ("--data-dir", "--budget-minutes", "--init-from", "--data-start-batch", "--no-baseline", "--cold-start",
            "--train-pattern", "--eval-pattern", "--span", "--pipeline-name")


class BaseModelStateError(ValueError):
    pass


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bertqa base-model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad-file", required=True, help="a SQuAD v1.1 training file")
    parser.add_argument("--hours", type=float, required=True, help="this call's training time, in hours")
    parser.add_argument("--runs-dir", default="runs/base", help="the base's runs directory (default runs/base)")
    parser.add_argument("--eval-articles", type=int, default=14,
                        help="the last N articles are held out of training (default 14)")
    parser.add_argument("--eval-max-paragraphs", type=int, default=8,
                        help="the eval split keeps their first N paragraphs; the rest are heldout.json (default 8)")
    parser.add_argument("--later-rate-scale", type=float, default=0.5, metavar="SHARE",
                        help="a call that continues a base peaks at this share of the recipe's learning rate "
                             "(--learning-rate, or the spec's): a restart at the full peak undoes much of the last "
                             "call (default 0.5)")
    args, runner_argv = parser.parse_known_args(argv)
    if not 0 < args.later_rate_scale <= 1:
        parser.error(f"--later-rate-scale must be above 0 and at most 1, not {args.later_rate_scale}")
    if not args.hours > 0:
        parser.error(f"--hours must be above 0, not {args.hours}")
    given = sorted({arg.split("=")[0] for arg in runner_argv} & set(SET_HERE))
    if given:
        parser.error(f"{', '.join(given)}: set by this command from the base's own state; leave them out")
    return args, runner_argv


def read_state(runs_dir: str) -> dict | None:
    path = pathlib.Path(runs_dir, STATE_FILE)
    return json.loads(path.read_text()) if path.exists() else None


def prepare(args) -> dict:
    """The base's state, with its data split written on the first call; refuses another SQuAD file."""
    from bertqa.operations import pushed_models

    state = read_state(args.runs_dir)
    if not os.path.isfile(args.squad_file):
        raise BaseModelStateError(f"--squad-file {args.squad_file}: no such file; give a SQuAD v1.1 training file")
    digest = pushed_models.file_sha256(args.squad_file)
    if state is not None:
        if state["sha256"] != digest:
            raise BaseModelStateError(
                f"{args.runs_dir} holds a base trained on {state['squad_file']} (sha256 {state['sha256'][:12]}); "
                f"{args.squad_file} is another file (sha256 {digest[:12]}): give that file, or another --runs-dir "
                "for a new base")
        return state
    # Written once: TFX fingerprints its input files by their modification time too, so rewriting
    # them would re-run SquadExampleGen and BertQATransform on every call.
    try:
        split = article_split.ArticleSplit(eval_articles=args.eval_articles,
                                           eval_max_paragraphs=args.eval_max_paragraphs)
        written = article_split.write_split_files(args.squad_file, split, os.path.join(args.runs_dir, "data"))
    except (ValueError, KeyError, TypeError) as error:  # json's JSONDecodeError is a ValueError
        raise BaseModelStateError(f"{args.squad_file}: not a SQuAD file this command can split by article "
                                  f"({error}); give a SQuAD v1.1 training file") from None
    state = {"squad_file": os.path.abspath(args.squad_file), "sha256": digest,
             "split": {"eval_articles": args.eval_articles, "eval_max_paragraphs": args.eval_max_paragraphs,
                       **{name: article_split.question_count(part) for name, (_, part) in written.items()}},
             "calls": []}
    write_state(args.runs_dir, state)
    return state


def write_state(runs_dir: str, state: dict) -> None:
    path = pathlib.Path(runs_dir, STATE_FILE)
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(state, indent=2))
    os.replace(scratch, path)  # a kill mid-write leaves the last state whole


def check_batch_size(args, state: dict, batch_size: int, tuned: bool) -> None:
    """A later call trains batches of the size the last one did: it takes the window order up at the last
    call's batch count (--data-start-batch), and batches of another size would start elsewhere in it.
    --tune on a later call is refused alike: the Tuner chooses a batch size inside the Trainer, after
    this call has placed it in the window order."""
    if state["calls"] and tuned:
        raise BaseModelStateError(
            f"{args.runs_dir} holds a base trained in batches of {state['calls'][-1]['batch_size']}, and --tune may "
            "train another batch size, whose place in the window order this call cannot count: tune on a new "
            "base's first call (another --runs-dir), or continue this base without --tune")
    if state["calls"] and state["calls"][-1]["batch_size"] != batch_size:
        last = state["calls"][-1]["batch_size"]
        raise BaseModelStateError(
            f"{args.runs_dir} holds a base trained in batches of {last}, and this call would train batches of "
            f"{batch_size}: its place in the window order is counted in batches of {last}; pass --batch-size {last}, "
            "or another --runs-dir for a new base")


def continuing(config, state: dict, rate_scale: float):
    """The pipeline config of this call: a call that continues a base peaks at `rate_scale` of the recipe's rate."""
    if not state["calls"]:
        return config
    spec = dataclasses.replace(config.spec, learning_rate=config.spec.learning_rate * rate_scale)
    return dataclasses.replace(config, spec=spec)


def runner_argv(args, state: dict, passed: list[str]) -> list[str]:
    """The local runner's arguments for this call: the base's data, its last version, where its data stopped."""
    argv = ["--runs-dir", args.runs_dir, "--data-dir", os.path.join(args.runs_dir, "data"),
            "--budget-minutes", f"{60 * args.hours:g}", "--no-baseline"]
    if not {"--epochs", "--train-steps"} & {arg.split("=")[0] for arg in passed}:
        # An upper bound only: on 2 CPU cores an hour trains about 0.75 of an epoch of SQuAD.
        argv += ["--epochs", f"{max(2.0, 2 * args.hours):g}"]
    if state["calls"]:
        last = state["calls"][-1]
        argv += ["--init-from", last["path"], "--data-start-batch", str(last["data_batches"][1])]
    return argv + passed


SCORED_FORMATS = ("saved_model", "model.tflite")


def heldout_scores(version, heldout: pathlib.Path, formats: tuple[str, ...] = SCORED_FORMATS) -> dict:
    """SQuAD exact match and F1 on `heldout` of a pushed version (pushed_models.PushedModel): its SavedModel and
    its model.tflite (those of them in `formats`), both on the windows the pipeline makes for the model (its
    identity: casing, window length, query length, stride)."""
    unknown = sorted(set(formats) - set(SCORED_FORMATS))
    if unknown or not formats:
        raise ValueError(f"cannot score {unknown or 'no format'}; choose from {', '.join(SCORED_FORMATS)}")
    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import WindowConfig
    from bertqa.model import evaluation
    from bertqa.on_device import scoring

    identity = version.record.get("identity") or {}
    window = WindowConfig(**{name: identity[name] for name in ("seq_len", "query_len", "doc_stride")
                             if name in identity})
    tokenizer = TokenizerConfig(os.path.join(version.path, "vocab.txt"), identity.get("do_lower_case", True))
    examples, windows = evaluation.squad_file_windows(str(heldout), tokenizer, window)
    config = evaluation.EvalConfig()
    scorers = {"saved_model": lambda: evaluation.evaluate_saved_model(version.saved_model_dir, examples, windows,
                                                                      config),
               "model.tflite": lambda: scoring.evaluate_tflite(os.path.join(version.path, "model.tflite"), examples,
                                                               windows, config)}
    results = {name: scorers[name]() for name in SCORED_FORMATS if name in formats}
    return {name: {"exact_match": round(float(result.metrics["exact_match"]), 2),
                   "f1": round(float(result.metrics["f1"]), 2)} for name, result in results.items()}


def record_call(args, state: dict, serving_dir: str, previous: set[str]) -> dict | None:
    """The state entry of the version this call pushed, or None when it pushed none."""
    from bertqa.operations import pushed_models

    latest = pushed_models.latest_pushed(serving_dir)
    if latest is None or latest.version in previous:
        return None
    summary = latest.training_summary()
    heldout = pathlib.Path(args.runs_dir, "data", "heldout.json")
    call = {"call": len(state["calls"]) + 1, "version": latest.version, "path": os.path.abspath(latest.path),
            "hours": args.hours, "steps": summary["steps_trained"], "data_batches": summary["data_batches"],
            "batch_size": summary["batch_size"], "training_seconds": summary["training_seconds"],
            "initialised_from": (summary.get("initialised_from") or {}).get("path"),
            "eval_f1": None if latest.f1 is None else round(latest.f1, 2),
            "heldout": heldout_scores(latest, heldout) if heldout.exists() else None}
    state["calls"].append(call)
    write_state(args.runs_dir, state)
    return call


def outcome_line(state: dict, call: dict) -> str:
    total_hours = sum(c["hours"] for c in state["calls"])
    held = call["heldout"]
    heldout = (f"held-out f1 {held['saved_model']['f1']:.2f} (model.tflite {held['model.tflite']['f1']:.2f}, "
               f"{state['split']['heldout']} questions)  " if held else "")
    return (f"base-model: call {call['call']}  version {call['version']}  {call['steps']} steps "
            f"(batches {call['data_batches'][0]}-{call['data_batches'][1]})  eval f1 {call['eval_f1']:.2f}  "
            f"{heldout}{total_hours:g} hours over {len(state['calls'])} calls\n"
            f"start a run from it: --init-from {call['path']}")


def main(argv=None) -> int:
    import local_runner
    from bertqa.operations import pushed_models, run_lock

    args, passed = parse_args(sys.argv[1:] if argv is None else argv)
    runner_args = None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        with run_lock.runs_lock(run_lock.lock_path(args.runs_dir, "bertqa")):
            state = prepare(args)
            runner_args = local_runner.parse_args(runner_argv(args, state, passed))
            config = continuing(local_runner.build_config(runner_args), state, args.later_rate_scale)
            check_batch_size(args, state, config.batch_size or config.spec.default_batch_size,
                             tuned=config.tuning is not None)
            previous = {v.version for v in pushed_models.list_pushed(config.serving_dir)}
            run_id = local_runner.run(config)
            call = record_call(args, state, config.serving_dir, previous)
    except run_lock.RunsLocked as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except BaseModelStateError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 (reported below, or re-raised)
        message = local_runner.failure_message(error, args.runs_dir, runner_args and runner_args.metadata_mysql)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(local_runner.summary(config, run_id))
    if call is None:
        print("base-model: this call pushed no version (see the run's report); the next call starts from "
              f"{state['calls'][-1]['path'] if state['calls'] else 'the encoder'} again", file=sys.stderr)
        return 1
    print(outcome_line(state, call))
    return 0


if __name__ == "__main__":
    sys.exit(main())
