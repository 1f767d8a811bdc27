"""Compiles the same pipeline for open-source Kubeflow Pipelines (v2) or Vertex AI Pipelines.

    python kubeflow_runner.py --pipeline-root gs://bucket/bertqa --data-root gs://bucket/squad \
        --serving-dir gs://bucket/serving --image REGISTRY/bertqa-tfx:0.1.0 --output bertqa_pipeline.yaml
    python kubeflow_runner.py --target vertex --pipeline-root gs://bucket/bertqa ... --output bertqa_pipeline.json

The image is built from the repo's Dockerfile (`make image`: the locked environment, the project,
the default model files). TFX 1.16 has no KFP v1 runner; KubeflowV2DagRunner writes a KFP v2
PipelineSpec. KFP's launcher takes gs://, s3:// or minio:// pipeline roots, and the tasks write
through TensorFlow's file system: gs:// is the one both support with the locked packages.

Targets:
  kfp     open-source Kubeflow Pipelines 2.x (the default): pipeline spec schema 2.1 (the only
          form whose parameters its backend reads: `runtimeValue.constant`), written as a bare
          PipelineSpec YAML (kfp.Client uploads .yaml/.zip/.tar.gz, not .json). Its backend runs no
          TFX resolver nodes and no `lifecycle` hooks, so a pipeline with a resolver node is
          refused, and ExampleGen's `lifecycle.preCacheCheck` (TFX's span driver) is taken out of
          the spec: SquadExampleGen's executor resolves {SPAN} patterns and records span,
          version and input fingerprint itself when no driver ran. Without the driver nothing
          fingerprints the input files before the cache lookup, so SquadExampleGen's task is
          compiled with caching off (new files under the same pattern must be read again).
  vertex  Vertex AI Pipelines: schema 2.0.0 (TFX's default), PipelineJob JSON (or a PipelineSpec
          YAML for a .yaml output). Vertex runs the driver hook and resolver tasks.

Training on several machines (--target vertex; docs/scaling-kubeflow.md): --train-workers N > 1
compiles the Trainer as TFX's Vertex AI Trainer (tfx.extensions.google_cloud_ai_platform.Trainer,
node id still "Trainer"). Its task submits a Vertex AI custom job in --vertex-project/--vertex-region:
worker pool 0 the chief (1 replica), pool 1 N-1 workers, all on --train-machine-type with --image.
Each replica runs the Trainer's executor and run_fn under the TF_CONFIG Vertex AI gives it
(MultiWorkerMirroredStrategy; the batch size is the global one, so a multiple of N); the chief
exports. Open-source KFP runs the Trainer in one pod, so --target kfp refuses N > 1. Compiled and
checked here only: nothing can be submitted to Vertex AI from this machine.

Pipeline parameters (RuntimeParameter; set per run with `bertqa kfp run --param NAME=VALUE`):
  data_root     SquadExampleGen's input_base (the data directory), default --data-root.
  train_args    the Trainer's TrainArgs as JSON, default from --train-steps, e.g.
                '{"splits": ["train"], "num_steps": 500}' (0 = --epochs / the spec's epochs).
  range_config  SquadExampleGen's RangeConfig as JSON: "" (the default without --span) reads the
                latest span of {SPAN} patterns on every run, which is what a recurring run wants;
                '{"static_range": {"start_span_number": 3, "end_span_number": 3}}' reads span 3
                (`bertqa kfp run --span 3` writes it).
What the TFX 1.16 v2 compiler (schema 2.1) accepts as a parameter, found by compiling each:
  - a whole top-level execution property of a primitive type (str/int/float), or a proto
    property that the component types as `Union[proto, RuntimeParameter]` given as a str
    RuntimeParameter holding the proto's JSON: input_base, range_config (the span),
    Trainer train_args and custom_config, Pusher push_destination. Each becomes
    `componentInputParameter` and a root input; TFX writes no default for it, so this runner
    adds `defaultValue` to the root input (a YAML package has no runtimeConfig to carry it).
  - not: a RuntimeParameter inside a dict (Trainer custom_config={"epochs": RuntimeParameter})
    compiles but is serialised into the constant as an object, so it never becomes a
    parameter; our components' own constructors reject one where they convert the value
    (SquadEvaluator min_f1: float(); TFLiteExporter variants: a list; SquadExampleGen
    input_config: read to derive the output config). --min-f1, --quantization and the
    train/eval patterns are therefore compile-time flags.
  - an int span: TFX has no span parameter of its own; range_config (a str holding the JSON) is
    the parameter that carries one.
The retraining baseline and warm start are read from --serving-dir (the push destination) by
the components themselves, not by a resolver, so they work on both targets; --serving-dir stays
a compile-time flag because both the Pusher and that baseline use it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline import quiet_startup  # noqa: E402, F401  (before TFX: hides its imports' known-harmless noise)

# isort: split

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from pipeline import options  # noqa: E402

TARGETS = ("kfp", "vertex")
DEFAULT_OUTPUT = {"kfp": "bertqa_pipeline.yaml", "vertex": "bertqa_pipeline.json"}
SCHEMA_VERSION = {"kfp": "2.1.0", "vertex": "2.0.0"}
EXAMPLE_GEN_TASK = "SquadExampleGen"
# Where the Dockerfile puts the model cache (ENV BERTQA_CACHE): the model spec's file paths
# (checkpoint, vocab.txt) are compiled into the spec, so they must be the image's paths.
IMAGE_MODEL_CACHE = "/opt/bertqa-cache"
VERTEX_MACHINE_TYPE = "n1-standard-8"
VERTEX_TRAINING_FLAGS = ("train_machine_type", "vertex_project", "vertex_region")


class TargetError(ValueError):
    """The pipeline (or the output) uses something the chosen target cannot run or read."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=TARGETS, default="kfp",
                        help="kfp: open-source Kubeflow Pipelines (default); vertex: Vertex AI Pipelines")
    parser.add_argument("--pipeline-name", default="bertqa")
    parser.add_argument("--pipeline-root", required=True, help="where the tasks write their artifacts")
    parser.add_argument("--data-root", required=True,
                        help="directory with the SQuAD JSON files (the default of the data_root parameter)")
    parser.add_argument("--serving-dir", required=True, help="the Pusher's destination")
    parser.add_argument("--image", default="bertqa-tfx:latest", help="the image built by `make image`")
    parser.add_argument("--model-cache-dir", default=IMAGE_MODEL_CACHE,
                        help="the model cache as the tasks see it (BERTQA_CACHE in the image; default "
                             f"{IMAGE_MODEL_CACHE}, the Dockerfile's)")
    parser.add_argument("--output", default=None,
                        help="bertqa_pipeline.yaml (kfp) or bertqa_pipeline.json (vertex); .yaml/.yml for a "
                             "PipelineSpec YAML, .json for a PipelineJob JSON")
    parser.add_argument("--train-pattern", default="train.json")
    parser.add_argument("--eval-pattern", default="eval.json",
                        help="'' to hash-split the train files by article title instead")
    parser.add_argument("--version-2-with-negative", action="store_true", help="SQuAD 2.0 data")
    parser.add_argument("--strict", action="store_true", help="fail on misaligned answers instead of repairing")
    options.add_spec_args(parser)
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=None,
                        help="overrides --epochs; the default of the train_args parameter")
    parser.add_argument("--budget-minutes", type=float, default=None, metavar="MINUTES",
                        help="the Trainer's wall-clock limit: it stops and exports when MINUTES of training have "
                             "passed, with the learning-rate schedule sized to them")
    options.add_matmul_dtype_arg(parser)
    options.add_xla_arg(parser)
    parser.add_argument("--train-workers", type=int, default=1, metavar="N",
                        help="--target vertex: train on N machines, a Vertex AI custom job of 1 chief and N-1 "
                             "workers (default 1: the Trainer's own task)")
    parser.add_argument("--train-machine-type", default=None,
                        help=f"the Vertex AI machine type of every training replica (default {VERTEX_MACHINE_TYPE})")
    parser.add_argument("--vertex-project", default=None, help="the Google Cloud project of the training job")
    parser.add_argument("--vertex-region", default=None, help="the Vertex AI region of the training job, "
                                                              "e.g. us-central1")
    options.add_tuning_args(parser)
    parser.add_argument("--span", type=int, default=None,
                        help="read this span of {SPAN} patterns (default: the latest); the default of the "
                             "range_config parameter")
    parser.add_argument("--min-f1", type=float, default=40.0, help="F1 (0-100) a model needs to be blessed")
    parser.add_argument("--no-baseline", action="store_true",
                        help="bless without comparing with the latest model in --serving-dir")
    parser.add_argument("--max-f1-regression", type=float, default=0.0,
                        help="F1 points a new model may fall behind the pushed baseline")
    parser.add_argument("--cold-start", action="store_true", help="no warm start from the pushed baseline")
    parser.add_argument("--quantization", default=None, metavar="VARIANTS", type=options.variants_arg,
                        help="TFLite variants, comma-separated from none, dynamic, float16, int8, or 'all'")
    options.add_push_rule_args(parser)
    parser.add_argument("--max-f1-drop", action="append", default=[], metavar="VARIANT=POINTS", type=options.limit_arg)
    parser.add_argument("--no-cache", action="store_true", help="compile with caching off for every task")
    parser.add_argument("--beam-arg", action="append", default=[],
                        help="a Beam pipeline argument, e.g. --beam-arg=--runner=DataflowRunner (repeatable)")
    args = parser.parse_args(argv)
    args.output = args.output or DEFAULT_OUTPUT[args.target]
    if args.target == "kfp" and not args.output.endswith((".yaml", ".yml")):
        parser.error(f"--output {args.output}: kfp.Client uploads a .yaml PipelineSpec; name the output *.yaml")
    _check_training_flags(parser, args)
    return args


def _check_training_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.train_workers < 1:
        parser.error(f"--train-workers {args.train_workers}: at least 1")
    given = ["--" + name.replace("_", "-") for name in VERTEX_TRAINING_FLAGS if getattr(args, name) is not None]
    if args.target == "kfp" and args.train_workers > 1:
        parser.error(
            f"--target kfp --train-workers {args.train_workers}: open-source Kubeflow Pipelines runs the Trainer "
            "in one pod (on that pod's devices), and TFX 1.16 has no multi-worker Trainer for it. Training on "
            "several machines there needs a custom component that launches a Kubeflow Training Operator TFJob "
            "of N pods, each with its TF_CONFIG, on storage every pod reads (the pipeline root). Use --target "
            "vertex for Vertex AI worker pools; see docs/scaling-kubeflow.md")
    options.check_xla_args(parser, args)
    if given and (args.target != "vertex" or args.train_workers == 1):
        parser.error(f"{', '.join(given)}: for --target vertex --train-workers N > 1 only (a Vertex AI training job)")
    if args.target == "vertex" and args.train_workers > 1:
        missing = [flag for flag in ("--vertex-project", "--vertex-region")
                   if not getattr(args, flag[2:].replace("-", "_"))]
        if missing:
            parser.error(f"--train-workers {args.train_workers} runs the Trainer as a Vertex AI custom job: "
                         f"name its {' and '.join(missing)}")
    args.train_machine_type = args.train_machine_type or VERTEX_MACHINE_TYPE


def runtime_parameters(args: argparse.Namespace) -> dict:
    """The pipeline parameters, by name, with their defaults from the flags."""
    from tfx.orchestration import data_types

    train_args = json.dumps({"splits": ["train"], "num_steps": args.train_steps or 0})
    range_config = "" if args.span is None else json.dumps(
        {"static_range": {"start_span_number": args.span, "end_span_number": args.span}})
    return {
        "data_root": data_types.RuntimeParameter(name="data_root", ptype=str, default=args.data_root),
        "train_args": data_types.RuntimeParameter(name="train_args", ptype=str, default=train_args),
        "range_config": data_types.RuntimeParameter(name="range_config", ptype=str, default=range_config),
    }


@contextlib.contextmanager
def _model_cache(path: str):
    """BERTQA_CACHE set to `path` while the model spec's paths are computed, restored afterwards."""
    saved = os.environ.get("BERTQA_CACHE")
    os.environ["BERTQA_CACHE"] = path
    try:
        yield
    finally:
        if saved is None:
            del os.environ["BERTQA_CACHE"]
        else:
            os.environ["BERTQA_CACHE"] = saved


def vertex_training(args: argparse.Namespace, spec):
    """The Vertex AI training job of --train-workers N > 1 (None: the standard Trainer)."""
    from pipeline.pipeline import VertexTraining

    if args.train_workers <= 1:
        return None
    batch_size = args.batch_size or spec.default_batch_size
    if batch_size % args.train_workers:
        # Each replica trains on its 1/N of every global batch (bertqa.model.distribution); caught here
        # rather than after Vertex AI has started N machines.
        raise TargetError(f"--train-workers {args.train_workers}: the batch size {batch_size} (global, over all "
                          f"replicas) does not divide among {args.train_workers} replicas; give a --batch-size "
                          f"that is a multiple of {args.train_workers}")
    return VertexTraining(project=args.vertex_project, region=args.vertex_region, image=args.image,
                          replicas=args.train_workers, machine_type=args.train_machine_type)


def build_config(args: argparse.Namespace, parameters: dict):
    from components.tflite_exporter import core as exporter
    from pipeline.pipeline import PipelineConfig

    with _model_cache(args.model_cache_dir):
        spec = options.spec_from_args(args)
    return PipelineConfig(
        vertex_training=vertex_training(args, spec),
        pipeline_name=args.pipeline_name, pipeline_root=args.pipeline_root, data_root=parameters["data_root"],
        serving_dir=args.serving_dir, spec=spec,
        train_pattern=args.train_pattern, eval_pattern=args.eval_pattern or None,
        version_2_with_negative=args.version_2_with_negative, strict=args.strict, epochs=args.epochs,
        batch_size=args.batch_size, train_steps=args.train_steps, train_budget_minutes=args.budget_minutes,
        train_matmul_dtype=args.matmul_dtype, train_xla=args.xla, train_data_start_batch=args.data_start_batch,
        tuning=options.tuning_config(args),
        train_args_parameter=parameters["train_args"],
        range_config_parameter=parameters["range_config"], compare_with_baseline=not args.no_baseline,
        max_f1_regression=args.max_f1_regression, cold_start=args.cold_start,
        min_f1=args.min_f1, tflite_variants=args.quantization or exporter.DEFAULT_VARIANTS,
        tflite_push_order=args.push_order or exporter.DEFAULT_PUSH_ORDER,
        tflite_task_library_f1=args.task_library_f1,
        max_f1_drop=dict(args.max_f1_drop), enable_cache=not args.no_cache,
        beam_pipeline_args=tuple(args.beam_arg))


def check_nodes_for_target(pipeline, target: str) -> None:
    """Refuses, before compiling, what the target cannot run: resolver nodes on open-source KFP."""
    from tfx.dsl.components.common import resolver

    if target != "kfp":
        return
    resolvers = [node.id for node in pipeline.components if isinstance(node, resolver.Resolver)]
    if resolvers:
        raise TargetError(
            f"--target kfp: the pipeline has TFX resolver node(s) {', '.join(resolvers)}; open-source Kubeflow "
            "Pipelines runs no resolver tasks (its backend has no resolver executor), so they would get no "
            "artifacts. Read the baseline from the push destination instead, or compile with --target vertex.")


def adapt_spec_for_target(pipeline_spec: dict, parameters: dict, target: str, pipeline_root: str = "") -> dict:
    """What the compiled spec needs for the target, done to the PipelineSpec dict in place.

    Both: each pipeline parameter gets its default as the root input's `defaultValue`, and the
    pipeline root is the spec's `defaultPipelineRoot` (TFX puts it only into a PipelineJob's
    runtimeConfig, which a YAML package has not; without it KFP would use its own default root).
    kfp: no `lifecycle` hooks (the backend ignores them), no resolver executor (refused),
    SquadExampleGen uncached (no driver fingerprints its input files before the cache lookup).
    """
    if pipeline_root:
        pipeline_spec["defaultPipelineRoot"] = pipeline_root
    root_inputs = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    for name, parameter in parameters.items():
        if name in root_inputs:
            root_inputs[name]["defaultValue"] = parameter.default
            root_inputs[name]["isOptional"] = True
    if target != "kfp":
        return pipeline_spec
    executors = pipeline_spec["deploymentSpec"]["executors"]
    for label, executor in executors.items():
        if "resolver" in executor:
            raise TargetError(f"--target kfp: executor {label} is a TFX resolver, which open-source Kubeflow "
                              "Pipelines cannot run; compile with --target vertex")
        executor.get("container", {}).pop("lifecycle", None)
    example_gen = pipeline_spec["root"]["dag"]["tasks"].get(EXAMPLE_GEN_TASK)
    if example_gen is not None:
        example_gen["cachingOptions"] = {"enableCache": False}
    return pipeline_spec


def compile_pipeline(args: argparse.Namespace) -> str:
    from tfx import v1 as tfx
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from pipeline.pipeline import create_pipeline

    parameters = runtime_parameters(args)
    pipeline = create_pipeline(build_config(args, parameters))
    check_nodes_for_target(pipeline, args.target)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=args.image, use_pipeline_spec_2_1=args.target == "kfp"),
        output_filename=args.output)
    # parameter_values: the defaults, in a PipelineJob JSON's runtimeConfig (a YAML package has none).
    job = runner.run(pipeline, parameter_values={name: p.default for name, p in parameters.items()},
                     write_out=False)
    spec = adapt_spec_for_target(job["pipelineSpec"], parameters, args.target, args.pipeline_root)
    if spec["schemaVersion"] != SCHEMA_VERSION[args.target]:
        raise TargetError(f"compiled schema {spec['schemaVersion']}, expected {SCHEMA_VERSION[args.target]}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    # TFX's own writer: a bare PipelineSpec YAML for .yaml/.yml (what kfp.Client uploads), else the
    # PipelineJob JSON (with runtimeConfig).
    kubeflow_v2_dag_runner._write_pipeline_spec_to_file(job, f"Compiled by kubeflow_runner.py --target {args.target}.",
                                                        args.output)
    return args.output


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        print(compile_pipeline(args))
    except TargetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
