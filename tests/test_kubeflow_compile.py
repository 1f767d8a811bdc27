"""The same pipeline compiles to a KFP v2 pipeline spec with every component in it."""

import json

import kubeflow_runner

COMPONENTS = ["SquadExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "BertQATransform", "Trainer",
              "SquadEvaluator", "TFLiteExporter", "Pusher"]


def test_kubeflow_v2_spec_contains_every_component(tmp_path):
    output = str(tmp_path / "pipeline.json")
    kubeflow_runner.main(["--pipeline-root", "gs://bucket/root", "--data-root", "gs://bucket/data",
                          "--serving-dir", "gs://bucket/serving", "--image", "example/bertqa:test",
                          "--output", output])
    with open(output) as f:
        spec = json.load(f)
    pipeline_spec = spec.get("pipelineSpec", spec)
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(COMPONENTS)
    executors = pipeline_spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"example/bertqa:test"}
    # The custom executors are named by their Python class path in the container commands.
    commands = json.dumps(executors)
    for executor in ("SquadExampleGenExecutor", "BertQATransformExecutor", "SquadEvaluatorExecutor",
                     "TFLiteExporterExecutor"):
        assert executor in commands
