"""The options a pipeline takes on the command line, read by both runners and the CLI.

Each runner chooses paths, an orchestrator and a metadata store; what the pipeline itself takes
(the spec and its recipe, the training step, the Tuner, the push rule, Beam's arguments) is
declared here once, as TFX's templates keep a pipeline's options in one module beside it.

Nothing here imports TensorFlow or TFX at import time: parsing a command line stays quick, and
the validators import the component cores they check against only when called.
"""

from __future__ import annotations

import argparse
import os

BEAM_MODES = {
    # One process: no per-worker TensorFlow import; measured fastest on the bundled sample.
    "in_process": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    # Worker processes; each imports TensorFlow (tens of seconds), so it pays off only on large inputs.
    "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=0"],
}


def variants_arg(text: str) -> tuple[str, ...]:
    from components.tflite_exporter import core as exporter

    try:
        return exporter.ExportPlan(variants=exporter.parse_variants(text)).variants
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _push_order_arg(text: str) -> tuple[str, ...]:
    from components.tflite_exporter import core as exporter

    if text.strip() == "all":  # 'all' would be VARIANTS' order, float32 first: an order must be chosen
        raise argparse.ArgumentTypeError("give the push order variant by variant, e.g. dynamic,float16,none")
    try:
        return exporter.ExportPlan(push_order=exporter.parse_variants(text)).push_order
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_push_rule_args(parser: argparse.ArgumentParser) -> None:
    """--push-order and --task-library-f1, for both runners."""
    parser.add_argument("--push-order", default=None, metavar="VARIANTS", type=_push_order_arg,
                        help="the variants tried for model.tflite, the file apps load, in order: the first one "
                             "blessed is pushed as it; one not in --quantization is exported only when those "
                             "before it miss their F1 limits (default: dynamic,float16,none)")
    parser.add_argument("--task-library-f1", action="store_true",
                        help="also score each TFLite variant as the Task Library's BertQuestionAnswerer answers "
                             "the eval questions (its F1 and how often it answers as LiteRT; about 0.25 s a "
                             "question for MiniLM)")


def limit_arg(text: str) -> tuple[str, float]:
    from components.tflite_exporter import core as exporter

    try:
        limits = exporter.parse_max_f1_drop([text])
        exporter.ExportPlan(max_f1_drop=limits)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return next(iter(limits.items()))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def add_matmul_dtype_arg(parser: argparse.ArgumentParser) -> None:
    """--matmul-dtype, for both runners. The choices are bertqa.model.training.MATMUL_DTYPES, written out
    so that parsing arguments does not import TensorFlow (a test checks they agree)."""
    parser.add_argument("--matmul-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="the dtype of the encoder's dense-layer matmuls in training steps (weights, optimizer "
                             "and everything else stay float32); auto: bfloat16 on CPUs with native bfloat16 "
                             "(AVX512-BF16, AMX), float32 elsewhere")


def add_xla_arg(parser: argparse.ArgumentParser) -> None:
    """--xla, for both runners."""
    parser.add_argument("--xla", action="store_true",
                        help="compile the training steps with XLA (once per length bucket): +22%% windows/s on full "
                             "SQuAD on 2 CPU cores, more memory, whole batches (no micro-batches), one training "
                             "process only; see docs/one-hour.md")
    parser.add_argument("--data-start-batch", type=int, default=0, metavar="N",
                        help="start N batches into the seeded order of the training windows (the next piece of a "
                             "training given in pieces: `bertqa base-model` passes where its last call stopped)")


def check_xla_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.xla and args.train_workers > 1:
        parser.error(f"--xla --train-workers {args.train_workers}: XLA-compiled steps train in one process; "
                     "drop one of the two")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def add_tuning_args(parser: argparse.ArgumentParser) -> None:
    """--tune and its limits, for both runners (bertqa.model.tuning.TuningConfig's defaults written out, so
    that parsing arguments does not import TensorFlow)."""
    parser.add_argument("--tune", action="store_true",
                        help="run TFX's Tuner before the Trainer: KerasTuner trials over the learning rate, warmup, "
                             "batch size and dropout, each a short training on a sample of the train split scored "
                             "on paragraphs held out of it (never the eval split); the Trainer takes the best "
                             "trial's values (docs/tuning.md)")
    parser.add_argument("--tune-trials", type=positive_int, default=4, metavar="N", help="--tune: at most N trials "
                        "(default 4)")
    parser.add_argument("--tune-minutes", type=_positive_float, default=20.0, metavar="MINUTES",
                        help="--tune: the whole search's time; each trial trains for its share (default 20)")
    parser.add_argument("--tune-windows", type=positive_int, default=4000, metavar="N",
                        help="--tune: the trials train on at most N windows of the train split (default 4000)")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in [0, 1)")
    return value


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    """--spec and the spec's optimisation settings, for both runners (a fixed recipe, such as the
    one-hour profile's, without a Tuner; --tune's best values replace them when both are given)."""
    parser.add_argument("--spec", default=None, help="model spec name (default: minilm_offline)")
    parser.add_argument("--learning-rate", type=_positive_float, default=None, metavar="RATE",
                        help="the peak learning rate (default: the spec's)")
    parser.add_argument("--warmup-fraction", type=_fraction, default=None, metavar="FRACTION",
                        help="the share of training spent warming the learning rate up (default: the spec's)")
    parser.add_argument("--dropout-rate", type=_fraction, default=None, metavar="RATE",
                        help="the encoder's dropout rate in training (default: the spec's)")
    parser.add_argument("--layer-decay", type=_decay_arg, default=None, metavar="DECAY",
                        help="layer-wise learning-rate decay: the span head trains at the peak rate, the top layer "
                             "at DECAY times it, each layer below at DECAY times the one above (ELECTRA: 0.8 for "
                             "small models; default: the spec's, one rate for all)")
    parser.add_argument("--answerless-keep", type=share_arg, default=None, metavar="SHARE",
                        help="train on every window with an answer and only this share of those without one, the "
                             "same windows each epoch: for long documents, where most windows hold no answer "
                             "(default: the spec's, 1: all)")
    parser.add_argument("--train-seq-len", type=_train_seq_len_arg, default=None, metavar="TOKENS",
                        help="cut the training split into windows of this many tokens (eval and serving keep the "
                             "spec's seq_len, 384): more windows per CPU-minute, but a model trained on short "
                             "contexts finds answers in long ones less well (128 with --answerless-keep 0.1 trained "
                             "1.6x the windows of `make run`'s budget and scored 3.7 F1 lower: benchmarks/RESULTS.md); "
                             "for apps that serve short windows (default: the spec's seq_len)")
    parser.add_argument("--init-from", default=None, metavar="PATH",
                        help="start training from this QA-tuned model instead of the spec's encoder: a pushed version "
                             "(serving/<version>/), a Trainer model of an earlier run, or a BERT checkpoint with a "
                             "span head (BertForQuestionAnswering's layout); a pushed model in the runs directory "
                             "still comes first when retraining (--cold-start starts from PATH)")
    parser.add_argument("--on-device-lengths", type=_lengths_arg, default=None, metavar="L,L,...",
                        help="the window lengths model.tflite has a signature for, beside the spec's seq_len "
                             "(default 384,320,256,224,192,176,160,128): an app runs each question at the "
                             "smallest that holds it; each one costs LiteRT about 13 MB of memory for MiniLM")


def _in_unit_interval(what: str):
    """An argparse type: a number in (0, 1], refused as "not a <what>" otherwise."""
    def parse(text: str) -> float:
        value = float(text)
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"{value} is not a {what} in (0, 1]")
        return value
    return parse


_decay_arg, share_arg = _in_unit_interval("decay"), _in_unit_interval("share")


def _train_seq_len_arg(text: str) -> int:
    # Its bound against the spec's seq_len and query_len is the spec's own check (BertQaSpec).
    value = int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"{value} is too few tokens for a window (question, context and 3 markers)")
    return value


def _lengths_arg(text: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 4:
        raise argparse.ArgumentTypeError(f"{text!r}: give token counts of at least 4, comma-separated, "
                                         "e.g. 384,256,192,128")
    return lengths


def spec_from_args(args: argparse.Namespace):
    """The named spec (or the default) with the settings given on the command line in place of its own."""
    from bertqa.model import model_spec

    # add_spec_args names one flag per tunable field (--learning-rate -> learning_rate).
    overrides = {field: getattr(args, field) for field in model_spec.TUNABLE_FIELDS
                 if getattr(args, field) is not None}
    if getattr(args, "layer_decay", None):
        overrides["layer_decay"] = args.layer_decay
    if getattr(args, "answerless_keep", None):
        overrides["answerless_keep"] = args.answerless_keep
    if getattr(args, "train_seq_len", None):
        overrides["train_seq_len"] = args.train_seq_len
    if getattr(args, "on_device_lengths", None):
        overrides["on_device_lengths"] = args.on_device_lengths
    if getattr(args, "init_from", None):
        # A local path as the components will read it, whatever their working directory.
        overrides["init_from"] = args.init_from if "://" in args.init_from else os.path.abspath(args.init_from)
    try:
        return model_spec.get(args.spec or model_spec.DEFAULT_SPEC, **overrides)
    except ValueError as error:  # a flag at odds with the spec's own settings (--train-seq-len above its seq_len)
        raise SystemExit(f"error: {error}") from None


def tuning_config(args: argparse.Namespace):
    """The TuningConfig of --tune, or None."""
    if not args.tune:
        return None
    from bertqa.model.tuning import TuningConfig

    return TuningConfig(max_trials=args.tune_trials, budget_minutes=args.tune_minutes,
                        sample_windows=args.tune_windows)


def beam_pipeline_args(args: argparse.Namespace) -> tuple[str, ...]:
    """--beam-mode's DirectRunner flags, then every --beam-arg; only the --beam-args when one names a runner."""
    names_runner = any(arg == "--runner" or arg.startswith("--runner=") for arg in args.beam_arg)
    return (*(() if names_runner else BEAM_MODES[args.beam_mode]), *args.beam_arg)
