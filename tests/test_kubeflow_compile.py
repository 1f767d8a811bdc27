"""kubeflow_runner.py: a spec open-source KFP reads (--target kfp) and one for Vertex AI (--target vertex)."""

import json
import re

import pytest
import yaml

import kubeflow_runner
from pipeline import options

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
    assert "xla" not in custom_config  # off unless asked for
    from bertqa.model import training

    parser = local_runner.build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "matmul_dtype")
    assert tuple(choices) == training.MATMUL_DTYPES


@pytest.mark.parametrize("runner", ["local", "kubeflow"])
def test_xla_reaches_the_trainer_on_either_runner_and_is_refused_with_several_workers(runner, tmp_path, capsys):
    import local_runner
    from pipeline.pipeline import create_pipeline

    if runner == "local":
        config = local_runner.build_config(local_runner.parse_args(
            ["--spec", "tiny_random", "--xla", "--runs-dir", str(tmp_path)]))
        refused = ["--xla", "--train-workers", "2"]
        parse = local_runner.parse_args
    else:
        args = kubeflow_runner.parse_args([*BASE_ARGS, "--spec", "tiny_random", "--xla",
                                           "--output", str(tmp_path / "p.yaml")])
        config = kubeflow_runner.build_config(args, kubeflow_runner.runtime_parameters(args))
        refused = [*BASE_ARGS, "--target", "vertex", "--xla", "--train-workers", "2"]
        parse = kubeflow_runner.parse_args
    trainer = next(c for c in create_pipeline(config).components if c.id == "Trainer")
    assert json.loads(trainer.exec_properties["custom_config"])["xla"] is True
    with pytest.raises(SystemExit):
        parse(refused)
    assert "--xla --train-workers 2: XLA-compiled steps train in one process" in capsys.readouterr().err


@pytest.mark.parametrize("runner", ["local", "kubeflow"])
def test_spec_flags_replace_the_specs_own_in_the_trainer(runner, tmp_path):
    import local_runner
    from bertqa.model import model_spec
    from pipeline.pipeline import create_pipeline

    flags = ["--spec", "tiny_random", "--learning-rate", "3e-4", "--warmup-fraction", "0.2", "--dropout-rate", "0",
             "--on-device-lengths", "384,256,128", "--answerless-keep", "0.25", "--train-seq-len", "128"]
    if runner == "local":
        config = local_runner.build_config(local_runner.parse_args([*flags, "--runs-dir", str(tmp_path)]))
    else:
        args = kubeflow_runner.parse_args([*BASE_ARGS, *flags, "--output", str(tmp_path / "p.yaml")])
        config = kubeflow_runner.build_config(args, kubeflow_runner.runtime_parameters(args))
    trainer = next(c for c in create_pipeline(config).components if c.id == "Trainer")
    spec = model_spec.from_json(json.loads(trainer.exec_properties["custom_config"])["model_spec"])
    assert (spec.learning_rate, spec.warmup_fraction, spec.dropout_rate) == (3e-4, 0.2, 0.0)
    assert spec.on_device_lengths == (384, 256, 128)
    assert spec.answerless_keep == 0.25
    # The training windows' length reaches the component that cuts them, and serving keeps the spec's.
    transform = next(c for c in create_pipeline(config).components if c.id == "BertQATransform")
    transform_spec = model_spec.from_json(transform.exec_properties["model_spec"])
    assert (transform_spec.train_window_config().seq_len, transform_spec.window_config().seq_len) == (128, 384)
    assert spec.weight_decay == model_spec.tiny_random().weight_decay  # what no flag names stays the spec's
    untouched = options.spec_from_args(local_runner.parse_args(["--spec", "tiny_random"]))
    assert untouched == model_spec.tiny_random()
    for bad in (["--warmup-fraction", "1.5"], ["--learning-rate", "0"], ["--dropout-rate", "-0.1"],
                ["--on-device-lengths", "384,2"], ["--on-device-lengths", "short"],
                ["--answerless-keep", "0"], ["--answerless-keep", "1.5"], ["--train-seq-len", "4"]):
        with pytest.raises(SystemExit):
            local_runner.parse_args(bad)
    # Longer than the spec's own windows: refused with the spec's line, not a traceback.
    with pytest.raises(SystemExit, match=r"train_seq_len must .* be at most seq_len \(384\), got 512"):
        options.spec_from_args(local_runner.parse_args(["--spec", "tiny_random", "--train-seq-len", "512"]))


VERTEX_TRAINING_ARGS = ["--train-workers", "3", "--vertex-project", "example-project", "--vertex-region",
                        "europe-west4", "--train-machine-type", "n1-highmem-16", "--batch-size", "48"]
VERTEX_TRAINER = "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
STANDARD_TRAINER = "tfx.components.trainer.executor.GenericExecutor"


def _executor_class(spec, task):
    args = _executors(spec)[f"{task}_executor"]["container"]["args"]
    return args[args.index("--executor_class_path") + 1]


def _trainer_custom_config(spec):
    parameter = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]["custom_config"]["runtimeValue"]
    return json.loads(parameter["constantValue"]["stringValue"])


@pytest.fixture(scope="module")
def vertex_training_job(tmp_path_factory):
    with open(_compile(tmp_path_factory, "--target", "vertex", "--span", "3", *VERTEX_TRAINING_ARGS)) as f:
        return json.load(f)


def test_vertex_train_workers_compile_the_trainer_as_a_vertex_ai_job_with_worker_pools(vertex_training_job):
    spec = vertex_training_job["pipelineSpec"]
    assert sorted(spec["root"]["dag"]["tasks"]) == sorted(COMPONENTS)  # the node id stays "Trainer"
    assert _executor_class(spec, "Trainer") == VERTEX_TRAINER
    config = _trainer_custom_config(spec)
    assert config["ai_platform_enable_vertex"] is True
    assert config["ai_platform_vertex_region"] == "europe-west4"
    job = config["ai_platform_training_args"]
    assert job["project"] == "example-project"
    pools = job["job_spec"]["worker_pool_specs"]
    assert [pool["replica_count"] for pool in pools] == [1, 2]  # the chief, then the workers
    for pool in pools:
        assert pool["machine_spec"] == {"machine_type": "n1-highmem-16"}
        assert pool["container_spec"] == {"image_uri": "example/bertqa:test"}  # the pipeline's --image
    # The run_fn's own keys ride along unchanged; no loopback workers (TF_CONFIG comes from Vertex AI).
    assert config["batch_size"] == 48 and "model_spec" in config and "train_workers" not in config
    assert spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]["train_args"] == {
        "componentInputParameter": "train_args"}
    # What TFX's executor hands Vertex AI: every pool runs TFX's run_executor with the standard Trainer
    # executor in our image (built as the executor builds it; no request is made).
    from tfx.extensions.google_cloud_ai_platform import training_clients

    client = training_clients.VertexJobClient.__new__(training_clients.VertexJobClient)
    custom_job = client.create_training_job({}, {}, {"custom_config": json.dumps(config)}, STANDARD_TRAINER,
                                            {k: v for k, v in job.items() if k != "project"}, None, None)
    for pool in custom_job["job_spec"]["worker_pool_specs"]:
        command = pool["container_spec"]["command"]
        assert command[:3] == ["python", "-m", "tfx.scripts.run_executor"]
        assert command[command.index("--executor_class_path") + 1] == STANDARD_TRAINER


def test_train_workers_1_keeps_the_standard_trainer(vertex_job, tmp_path_factory):
    spec = vertex_job["pipelineSpec"]
    assert _executor_class(spec, "Trainer") == STANDARD_TRAINER
    assert not any(key.startswith("ai_platform") for key in _trainer_custom_config(spec))
    with open(_compile(tmp_path_factory, "--target", "vertex", "--span", "3", "--train-workers", "1")) as f:
        explicit = json.load(f)
    assert explicit["pipelineSpec"] == spec


@pytest.mark.parametrize(("target", "flags", "message"), [
    ("kfp", ["--train-workers", "2"], "runs the Trainer in one pod.*Training Operator TFJob"),
    ("vertex", ["--train-workers", "2", "--vertex-region", "us-central1"],
     "Vertex AI custom job: name its --vertex-project"),
    ("vertex", ["--vertex-project", "p"], "--vertex-project: for --target vertex --train-workers N > 1 only"),
    ("vertex", ["--train-workers", "0"], "--train-workers 0: at least 1"),
])
def test_train_workers_refused_where_the_target_cannot_run_them(target, flags, message, tmp_path, capsys):
    output = str(tmp_path / ("p.yaml" if target == "kfp" else "p.json"))
    with pytest.raises(SystemExit) as exit_info:
        kubeflow_runner.parse_args([*BASE_ARGS, "--target", target, *flags, "--output", output])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err.replace("\n", " "))


def test_vertex_train_workers_refuse_a_batch_that_does_not_divide(tmp_path, capsys):
    # minilm_offline's batch of 32 among 3 replicas: refused before anything is compiled.
    assert kubeflow_runner.main([*BASE_ARGS, "--target", "vertex", *VERTEX_TRAINING_ARGS[:-2],
                                 "--output", str(tmp_path / "p.json")]) == 2
    assert "the batch size 32 (global, over all replicas) does not divide among 3" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("runner", ["local", "kubeflow"])
def test_beam_args_reach_the_pipeline_on_either_runner(runner, tmp_path):
    import local_runner
    from pipeline.pipeline import create_pipeline

    portable = ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL"]
    beam_args = [f"--beam-arg={arg}" for arg in portable]
    if runner == "local":  # --beam-mode's DirectRunner flags are left out once a --beam-arg names a runner
        config = local_runner.build_config(local_runner.parse_args(
            [*beam_args, "--beam-mode", "multi_processing", "--runs-dir", str(tmp_path)]))
    else:
        args = kubeflow_runner.parse_args([*BASE_ARGS, *beam_args, "--output", str(tmp_path / "p.yaml")])
        config = kubeflow_runner.build_config(args, kubeflow_runner.runtime_parameters(args))
    assert create_pipeline(config).beam_pipeline_args == portable


def test_local_runner_keeps_the_direct_runner_flags_unless_a_beam_arg_names_a_runner():
    import local_runner

    default = options.beam_pipeline_args(local_runner.parse_args([]))
    assert default == tuple(options.BEAM_MODES["in_process"])
    tuned = local_runner.parse_args(["--beam-mode", "multi_processing", "--beam-arg=--direct_num_workers=2"])
    assert options.beam_pipeline_args(tuned) == (*options.BEAM_MODES["multi_processing"],
                                                      "--direct_num_workers=2")
    spaced = local_runner.parse_args(["--beam-arg=--runner", "--beam-arg=FlinkRunner"])
    assert options.beam_pipeline_args(spaced) == ("--runner", "FlinkRunner")


@pytest.mark.parametrize("target", ["kfp", "vertex"])
def test_tune_compiles_tfxs_tuner_task_whose_best_hyperparameters_feed_the_trainer(target, tmp_path_factory):
    output = _compile(tmp_path_factory, *(["--target", "vertex"] if target == "vertex" else []),
                      "--tune", "--tune-trials", "3", "--tune-minutes", "5")
    with open(output) as f:
        compiled = yaml.safe_load(f) if target == "kfp" else json.load(f)["pipelineSpec"]
    tasks = compiled["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted([*COMPONENTS, "Tuner"])
    assert _executor_class(compiled, "Tuner") == "tfx.components.tuner.executor.Executor"
    value = tasks["Tuner"]["inputs"]["parameters"]["custom_config"]["runtimeValue"]
    # Schema 2.1 (kfp) writes a constant, 2.0 (vertex) a constantValue.
    tuner_config = json.loads(value["constant"] if "constant" in value else value["constantValue"]["stringValue"])
    assert json.loads(tuner_config["tuning"])["max_trials"] == 3
    hyperparameters = tasks["Trainer"]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"]
    assert hyperparameters == {"producerTask": "Tuner", "outputArtifactKey": "best_hyperparameters"}
    assert tasks["RunReporter"]["inputs"]["artifacts"]["tuner_results"]["taskOutputArtifact"]["producerTask"] == "Tuner"


def test_init_from_compiles_to_an_importer_whose_model_feeds_the_trainers_base_model(tmp_path_factory):
    with open(_compile(tmp_path_factory, "--init-from", "gs://bucket/bases/squad-base")) as f:
        spec = yaml.safe_load(f)
    tasks = spec["root"]["dag"]["tasks"]
    assert "BaseModelImporter" in tasks
    importer = next(e for e in _executors(spec).values() if "importer" in e)["importer"]
    assert importer["artifactUri"] == {"constant": "gs://bucket/bases/squad-base"}
    assert importer["typeSchema"]["instanceSchema"].startswith("title: tfx.Model")
    assert tasks["BaseModelImporter"]["inputs"]["parameters"]["artifact_uri"]["runtimeValue"]["constant"] == (
        "gs://bucket/bases/squad-base")
    assert tasks["Trainer"]["inputs"]["artifacts"]["base_model"]["taskOutputArtifact"]["producerTask"] == (
        "BaseModelImporter")
