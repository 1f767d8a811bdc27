"""Compiles the same pipeline for Kubeflow Pipelines (v2) or Vertex AI Pipelines.

    python kubeflow_runner.py --pipeline-root gs://bucket/bertqa --data-root gs://bucket/squad \
        --serving-dir gs://bucket/serving --image REGISTRY/bertqa:0.1.0 --output bertqa_pipeline.json

The image is built from the repo's Dockerfile (the project and its locked dependencies).
TFX 1.16 has no KFP v1 runner; KubeflowV2DagRunner writes a KFP v2 pipeline spec (JSON).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline-name", default="bertqa")
    parser.add_argument("--pipeline-root", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--serving-dir", required=True)
    parser.add_argument("--train-pattern", default="train.json")
    parser.add_argument("--eval-pattern", default="eval.json")
    parser.add_argument("--spec", default=None)
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--min-f1", type=float, default=40.0)
    parser.add_argument("--image", default="bertqa-tfx:latest")
    parser.add_argument("--output", default="bertqa_pipeline.json")
    parser.add_argument("--beam-arg", action="append", default=[],
                        help="a Beam pipeline argument, e.g. --beam-arg=--runner=DataflowRunner (repeatable)")
    return parser.parse_args(argv)


def compile_pipeline(args: argparse.Namespace) -> str:
    from tfx import v1 as tfx

    from bertqa import model_spec
    from pipeline.pipeline import PipelineConfig, create_pipeline

    config = PipelineConfig(
        pipeline_name=args.pipeline_name, pipeline_root=args.pipeline_root, data_root=args.data_root,
        serving_dir=args.serving_dir, spec=model_spec.get(args.spec or model_spec.DEFAULT_SPEC),
        train_pattern=args.train_pattern, eval_pattern=args.eval_pattern or None, epochs=args.epochs,
        min_f1=args.min_f1, beam_pipeline_args=tuple(args.beam_arg))
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=args.image),
        output_filename=args.output)
    runner.run(create_pipeline(config))
    return args.output


def main(argv=None) -> int:
    print(compile_pipeline(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
