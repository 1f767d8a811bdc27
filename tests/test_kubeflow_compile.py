"""kubeflow_runner.py: a spec open-source KFP reads (--target kfp) and one for Vertex AI (--target vertex)."""

import json

import pytest
import yaml

import kubeflow_runner

COMPONENTS = ["SquadExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "BertQATransform", "Trainer",
              "SquadEvaluator", "TFLiteExporter", "Pusher", "RunReporter"]
PARAMETERS = {"data_root", "train_args", "range_config"}
RUN_EXECUTOR = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
DRIVER = ["python", "-m", "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"]
BASE_ARGS = ["--pipeline-root", "gs://bucket/root", "--data-root", "gs://bucket/data",
             "--serving-dir", "gs://bucket/serving", "--image", "example/bertqa:test"]


def _compile(tmp_path_factory, *args):
    output = str(tmp_path_factory.mktemp("compiled") / ("pipeline.json" if "vertex" in args else "pipeline.yaml"))
    assert kubeflow_runner.main([*BASE_ARGS, *args, "--output", output]) == 0
    return output


@pytest.fixture(scope="module")
def kfp_package(tmp_path_factory):
    return _compile(tmp_path_factory, "--train-steps", "7")


@pytest.fixture(scope="module")
def kfp_spec(kfp_package):
    with open(kfp_package) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def vertex_job(tmp_path_factory):
    with open(_compile(tmp_path_factory, "--target", "vertex", "--span", "3")) as f:
        return json.load(f)


def _executors(spec):
    return spec["deploymentSpec"]["executors"]


def test_kfp_target_is_schema_2_1_with_every_component(kfp_spec):
    assert kfp_spec["schemaVersion"] == "2.1.0"
    assert kfp_spec["defaultPipelineRoot"] == "gs://bucket/root"  # else KFP would use its own (minio://)
    assert sorted(kfp_spec["root"]["dag"]["tasks"]) == sorted(COMPONENTS)
    assert sorted(kfp_spec["components"]) == sorted(COMPONENTS)


def test_kfp_target_parameters_are_constants_or_pipeline_parameters_with_defaults(kfp_spec):
    root_inputs = kfp_spec["root"]["inputDefinitions"]["parameters"]
    assert set(root_inputs) == PARAMETERS
    for name, definition in root_inputs.items():
        assert definition["parameterType"] == "STRING" and "defaultValue" in definition, name
    assert json.loads(root_inputs["train_args"]["defaultValue"]) == {"splits": ["train"], "num_steps": 7}
    assert root_inputs["range_config"]["defaultValue"] == ""  # the latest span
    assert root_inputs["data_root"]["defaultValue"] == "gs://bucket/data"
    used = set()
    for task_name, task in kfp_spec["root"]["dag"]["tasks"].items():
        for name, source in task["inputs"]["parameters"].items():
            if "componentInputParameter" in source:
                used.add(source["componentInputParameter"])
            else:
                # The form open-source KFP's backend reads; schema 2.0's constantValue it does not.
                assert list(source) == ["runtimeValue"] and list(source["runtimeValue"]) == ["constant"], \
                    (task_name, name, source)
    assert used == PARAMETERS


def test_kfp_target_has_only_container_tasks_without_lifecycle_hooks(kfp_spec):
    executors = _executors(kfp_spec)
    assert len(executors) == len(COMPONENTS)
    for label, executor in executors.items():
        # No resolver or importer executors, and no hook (open-source KFP runs neither preCacheCheck nor
        # resolver tasks): every task is a container running the TFX v2 entrypoint in our image.
        assert list(executor) == ["container"], label
        container = executor["container"]
        assert "lifecycle" not in container, label
        assert container["image"] == "example/bertqa:test"
        assert container["command"] == RUN_EXECUTOR
        args = container["args"]
        assert args[args.index("--json_serialized_invocation_args") + 1] == "{{$}}"
        assert "--json_serialized_inputs_spec_args" in args
    commands = json.dumps(executors)
    for executor in ("SquadExampleGenExecutor", "BertQATransformExecutor", "SquadEvaluatorExecutor",
                     "TFLiteExporterExecutor"):
        assert executor in commands


def test_model_files_are_compiled_to_the_image_model_cache(kfp_spec):
    constant = kfp_spec["root"]["dag"]["tasks"]["BertQATransform"]["inputs"]["parameters"]["model_spec"]
    spec = json.loads(constant["runtimeValue"]["constant"])
    assert spec["checkpoint_dir"].startswith(kubeflow_runner.IMAGE_MODEL_CACHE + "/")


def test_kfp_target_reads_example_gen_inputs_fresh_on_every_run(kfp_spec):
    tasks = kfp_spec["root"]["dag"]["tasks"]
    assert tasks["SquadExampleGen"]["cachingOptions"] == {"enableCache": False}
    assert all(tasks[name]["cachingOptions"] == {"enableCache": True} for name in COMPONENTS[1:])


def test_kfp_client_package_loading_accepts_the_yaml(kfp_package):
    from kfp import client as kfp_client

    # What kfp.Client.upload_pipeline, run_pipeline and create_recurring_run read a package with.
    doc = kfp_client.client._extract_pipeline_yaml(kfp_package)
    assert doc.pipeline_spec.schema_version == "2.1.0"
    assert sorted(doc.pipeline_spec.root.dag.tasks) == sorted(COMPONENTS)
    # And the body a run from the package would send (kfp.Client makes no request until a call needs one
    # when it is given a namespace).
    client = kfp_client.Client(host="http://127.0.0.1:9", namespace="kubeflow-user")
    job = client._create_job_config(params={"train_args": '{"num_steps": 3}'}, pipeline_package_path=kfp_package,
                                    pipeline_id=None, version_id=None, enable_caching=None, pipeline_root=None)
    assert job.pipeline_spec["pipelineInfo"]["name"] == "bertqa"
    assert job.runtime_config.parameters == {"train_args": '{"num_steps": 3}'}


def test_kfp_target_refuses_a_json_package(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kubeflow_runner.parse_args([*BASE_ARGS, "--output", str(tmp_path / "p.json")])
    assert exit_info.value.code == 2
    assert "kfp.Client uploads a .yaml" in capsys.readouterr().err


def test_kfp_target_refuses_a_pipeline_with_a_resolver_node():
    from tfx import v1 as tfx

    from bertqa.model import model_spec
    from pipeline.pipeline import PipelineConfig, create_pipeline

    config = PipelineConfig(pipeline_name="bertqa", pipeline_root="/r", data_root="/d", serving_dir="/s",
                            spec=model_spec.get("tiny_random"))
    base = create_pipeline(config)
    trainer = next(c for c in base.components if c.id == "Trainer")
    resolver = tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
                                model=trainer.outputs["model"]).with_id("latest_model_resolver")
    pipeline = tfx.dsl.Pipeline(pipeline_name="bertqa", pipeline_root="/r", components=[*base.components, resolver])
    with pytest.raises(kubeflow_runner.TargetError, match="latest_model_resolver.*runs no resolver"):
        kubeflow_runner.check_nodes_for_target(pipeline, "kfp")
    kubeflow_runner.check_nodes_for_target(pipeline, "vertex")  # Vertex AI runs resolver tasks
    spec = {"deploymentSpec": {"executors": {"r_executor": {"resolver": {}}}}, "root": {"dag": {"tasks": {}}}}
    with pytest.raises(kubeflow_runner.TargetError, match="r_executor is a TFX resolver"):
        kubeflow_runner.adapt_spec_for_target(spec, {}, "kfp")


def test_vertex_target_is_a_schema_2_0_job_with_the_example_gen_driver(vertex_job):
    spec = vertex_job["pipelineSpec"]
    assert spec["schemaVersion"] == "2.0.0"
    assert sorted(spec["root"]["dag"]["tasks"]) == sorted(COMPONENTS)
    example_gen = _executors(spec)["SquadExampleGen_executor"]["container"]
    assert example_gen["lifecycle"]["preCacheCheck"]["command"] == DRIVER
    assert sum("lifecycle" in e["container"] for e in _executors(spec).values()) == 1
    # Schema 2.0's parameter form, and the defaults in the job's runtimeConfig.
    constant = spec["root"]["dag"]["tasks"]["SchemaGen"]["inputs"]["parameters"]["exclude_splits"]
    assert "constantValue" in constant["runtimeValue"]
    parameters = vertex_job["runtimeConfig"]["parameters"]
    assert set(parameters) == PARAMETERS
    assert json.loads(parameters["range_config"]["stringValue"]) == {
        "static_range": {"start_span_number": 3, "end_span_number": 3}}


@pytest.mark.parametrize("runner", ["local", "kubeflow"])
def test_budget_minutes_and_matmul_dtype_reach_the_trainer_on_either_runner(runner, tmp_path):
    import local_runner
    from pipeline.pipeline import create_pipeline

    if runner == "local":
        config = local_runner.build_config(local_runner.parse_args(
            ["--spec", "tiny_random", "--budget-minutes", "45", "--matmul-dtype", "float32",
             "--runs-dir", str(tmp_path)]))
    else:
        args = kubeflow_runner.parse_args([*BASE_ARGS, "--spec", "tiny_random", "--budget-minutes", "45",
                                           "--matmul-dtype", "float32", "--output", str(tmp_path / "p.yaml")])
        config = kubeflow_runner.build_config(args, kubeflow_runner.runtime_parameters(args))
    trainer = next(c for c in create_pipeline(config).components if c.id == "Trainer")
    custom_config = json.loads(trainer.exec_properties["custom_config"])
    assert custom_config["train_budget_minutes"] == 45.0
    assert custom_config["matmul_dtype"] == "float32"
    from bertqa.model import training

    parser = local_runner.build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "matmul_dtype")
    assert tuple(choices) == training.MATMUL_DTYPES
