"""create_pipeline: SQuAD JSON -> windows -> fine-tuned BERT -> SQuAD metrics -> TFLite -> push.

This module only connects components; the runners (local_runner.py,
kubeflow_runner.py) choose paths, the orchestrator and Beam's arguments.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from tfx import v1 as tfx

from bertqa.model import model_spec
from bertqa.model.tuning import TuningConfig
from bertqa.operations.metadata_store import MySqlStore
from components.bert_qa_transform.component import BertQATransform
from components.pusher.component import Pusher
from components.run_reporter.component import RunReporter
from components.squad_evaluator.component import SquadEvaluator
from components.squad_example_gen.component import SquadExampleGen, separate_files, single_span, split_by_title
from components.tflite_exporter import core as tflite_exporter_core
from components.tflite_exporter.component import TFLiteExporter

RUN_FN = "components.trainer.module.run_fn"
TUNER_FN = "components.trainer.tuner.tuner_fn"


@dataclasses.dataclass(frozen=True)
class VertexTraining:
    """The Trainer as a Vertex AI custom job on several machines (TFX's google_cloud_ai_platform Trainer).

    Worker pool 0 is the chief (one replica), pool 1 the other replicas - 1 workers, all on
    `machine_type` with `image`. Vertex AI sets each replica's TF_CONFIG, and each runs the
    Trainer's executor with the same run_fn; the chief exports (components/trainer/module.py).
    """
    project: str
    region: str
    image: str
    replicas: int  # training replicas in all: the chief and replicas - 1 workers
    machine_type: str = "n1-standard-8"

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError(f"VertexTraining: replicas {self.replicas}, expected at least 1 (the chief)")
        missing = [name for name in ("project", "region", "image") if not getattr(self, name)]
        if missing:
            raise ValueError(f"VertexTraining: no {', '.join(missing)}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    pipeline_name: str
    pipeline_root: str
    data_root: str
    serving_dir: str
    spec: model_spec.BertQaSpec
    # Train and eval from separate files under data_root; with eval_pattern None, every file
    # matching train_pattern is hash-split by article title instead. Patterns may carry
    # {SPAN} (e.g. "span-{SPAN}/train.json"): the run reads the latest span, or `span`.
    train_pattern: str = "train.json"
    eval_pattern: str | None = "eval.json"
    span: int | None = None
    version_2_with_negative: bool = False
    strict: bool = False
    epochs: float | None = None  # None: the spec's default_training_epochs
    batch_size: int | None = None
    train_steps: int | None = None  # overrides epochs when set
    # The Trainer's wall-clock limit: it stops and exports when it ends, with the learning-rate
    # schedule sized to it (bertqa.model.training.TrainConfig.time_budget_seconds); None: no limit.
    train_budget_minutes: float | None = None
    # The dtype of the dense layers' matmuls in training steps (TrainConfig.matmul_dtype).
    train_matmul_dtype: str = "auto"
    # Training steps compiled with XLA (TrainConfig.xla): whole batches, one replica.
    train_xla: bool = False
    # Where the training starts in its seeded window order, in batches (TrainConfig.start_batch).
    train_data_start_batch: int = 0
    # Training in N processes on this machine's loopback (MultiWorkerMirroredStrategy; the batch
    # size stays the global one): shows the multi-worker path, not a speed-up on one machine.
    train_workers: int = 1
    # A Tuner before the Trainer (KerasTuner over the learning rate, warmup, batch size and
    # dropout, scored on paragraphs held out of the train split); its best values replace the
    # spec's in the Trainer. None: no Tuner, the spec's settings.
    tuning: TuningConfig | None = None
    # The Trainer as a Vertex AI custom job on several machines (Vertex AI Pipelines only); None:
    # the standard Trainer, in the orchestrator's own process or pod.
    vertex_training: VertexTraining | None = None
    # How often the Trainer saves what it needs to resume after a kill (see components/trainer/module.py).
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float = 5.0
    min_f1: float = 40.0
    # Retraining: the latest model pushed to serving_dir is the baseline that a new model
    # must not fall behind by more than max_f1_regression F1 points on this run's eval split,
    # and the warm start of training (unless cold_start).
    compare_with_baseline: bool = True
    max_f1_regression: float = 0.0
    cold_start: bool = False
    # TFLite variants to export, score and bless, per-variant limits on the F1 drop against the
    # SavedModel (points), and the push order: the first blessed variant of it becomes model.tflite,
    # those not in tflite_variants exported only when the ones before them miss their limits.
    tflite_variants: tuple[str, ...] = tflite_exporter_core.DEFAULT_VARIANTS
    tflite_push_order: tuple[str, ...] = tflite_exporter_core.DEFAULT_PUSH_ORDER
    # Also score every variant as the Task Library answers (about 0.25 s a question for MiniLM).
    tflite_task_library_f1: bool = False
    max_f1_drop: Mapping[str, float] = dataclasses.field(default_factory=dict)
    enable_cache: bool = True
    beam_pipeline_args: tuple[str, ...] = ()
    # The local runner's ML Metadata store: None for the SQLite file beside pipeline_root, or a
    # server (bertqa.operations.metadata_store.MySqlStore) that several runs directories share.
    metadata_server: MySqlStore | None = None
    # Kubeflow pipeline parameters (tfx.dsl.experimental.RuntimeParameter, ptype str) that replace
    # compile-time values, set per run: the Trainer's TrainArgs as JSON (instead of train_steps),
    # and a RangeConfig as JSON, "" for the latest span (instead of span). See kubeflow_runner.py.
    train_args_parameter: tfx.dsl.experimental.RuntimeParameter | None = None
    range_config_parameter: tfx.dsl.experimental.RuntimeParameter | None = None


def input_config(config: PipelineConfig) -> tfx.proto.Input:
    if config.eval_pattern:
        return separate_files(config.train_pattern, config.eval_pattern)
    return tfx.proto.Input(splits=[tfx.proto.Input.Split(name="all", pattern=config.train_pattern)])


def range_config(config: PipelineConfig):
    if config.range_config_parameter is not None:
        return config.range_config_parameter
    return single_span(config.span) if config.span is not None else None


def report_settings(config: PipelineConfig) -> dict:
    """What the run report shows under provenance: the spec and the settings that judge a model."""
    return {"spec": config.spec.name, "min_f1": config.min_f1, "max_f1_regression": config.max_f1_regression,
            "compare_with_baseline": config.compare_with_baseline, "cold_start": config.cold_start,
            "tflite_variants": list(config.tflite_variants), "max_f1_drop": dict(config.max_f1_drop),
            "tflite_push_order": list(config.tflite_push_order),
            "tflite_task_library_f1": config.tflite_task_library_f1,
            "epochs": config.epochs, "batch_size": config.batch_size, "train_steps": config.train_steps,
            "train_budget_minutes": config.train_budget_minutes, "train_matmul_dtype": config.train_matmul_dtype,
            "train_xla": config.train_xla, "train_workers": config.train_workers,
            "train_pattern": config.train_pattern,
            "eval_pattern": config.eval_pattern,
            **({"vertex_training": dataclasses.asdict(config.vertex_training)} if config.vertex_training else {})}


def vertex_training_config(vertex: VertexTraining | None) -> dict:
    """The Trainer's custom_config keys that make TFX's Vertex AI Trainer run `vertex`'s custom job."""
    if vertex is None:
        return {}
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import executor

    def pool(replicas: int) -> dict:
        # Vertex AI's WorkerPoolSpec; TFX sets container_spec.command to its run_executor entrypoint.
        return {"machine_spec": {"machine_type": vertex.machine_type}, "replica_count": replicas,
                "container_spec": {"image_uri": vertex.image}}

    pools = [pool(1)] + ([pool(vertex.replicas - 1)] if vertex.replicas > 1 else [])
    # A CustomJob (job_spec), not the bare CustomJobSpec form TFX 1.16 calls deprecated; TFX takes
    # `project` out of it before it submits the job.
    return {constants.ENABLE_VERTEX_KEY: True, constants.VERTEX_REGION_KEY: vertex.region,
            executor.TRAINING_ARGS_KEY: {"project": vertex.project, "job_spec": {"worker_pool_specs": pools}}}


def trainer_class(config: PipelineConfig):
    """tfx.components.Trainer, or with config.vertex_training TFX's Vertex AI Trainer (also node id "Trainer")."""
    if config.vertex_training is None:
        return tfx.components.Trainer
    if config.train_workers > 1:
        raise ValueError("train_workers (processes on this machine) and vertex_training (a Vertex AI job's "
                         "replicas) are two ways to train on several workers: set one")
    from tfx.extensions.google_cloud_ai_platform.trainer.component import Trainer as VertexTrainer

    return VertexTrainer


def data_components(config: PipelineConfig) -> list:
    """SquadExampleGen, StatisticsGen, SchemaGen, ExampleValidator and BertQATransform, in that order:
    the part of the pipeline that needs no model, and the part that runs on Beam."""
    example_gen = SquadExampleGen(
        input_base=config.data_root, input_config=input_config(config),
        output_config=None if config.eval_pattern else split_by_title(), range_config=range_config(config),
        version_2_with_negative=config.version_2_with_negative, strict=config.strict)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    transform = BertQATransform(examples=example_gen.outputs["examples"], spec=config.spec)
    return [example_gen, statistics_gen, schema_gen, example_validator, transform]


def create_data_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx.dsl.Pipeline:
    """data_components alone, up to BertQATransform's windows: to try a Beam runner on the pipeline's
    own Beam work without training (tests/test_portable_runner.py, docs/scaling-beam.md)."""
    return _pipeline(config, data_components(config), metadata_connection_config)


def _pipeline(config: PipelineConfig, components: list, metadata_connection_config) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args))


def create_pipeline(config: PipelineConfig, metadata_connection_config=None) -> tfx.dsl.Pipeline:
    example_gen, statistics_gen, schema_gen, example_validator, transform = data_components(config)

    baseline_dir = config.serving_dir if config.compare_with_baseline else ""
    tuner = None if config.tuning is None else tfx.components.Tuner(
        tuner_fn=TUNER_FN, examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        # The trials train and are scored on the train split alone (held-out paragraphs of it,
        # bertqa.model.tuning): the eval split, which blesses the model, takes no part.
        train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["train"]),
        custom_config={"model_spec": model_spec.to_json(config.spec), "batch_size": config.batch_size,
                       "tuning": json.dumps(dataclasses.asdict(config.tuning)),
                       "matmul_dtype": config.train_matmul_dtype})
    # The spec's QA-tuned base (--init-from), imported so that ML Metadata records it as the
    # Trainer's base_model input; the Trainer reads the path from the spec (bertqa.model.base_model).
    base = (tfx.dsl.Importer(source_uri=config.spec.init_from, artifact_type=tfx.types.standard_artifacts.Model)
            .with_id("BaseModelImporter") if config.spec.init_from else None)
    trainer = trainer_class(config)(
        run_fn=RUN_FN,
        base_model=base.outputs["result"] if base else None,
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=(config.train_args_parameter if config.train_args_parameter is not None
                    else tfx.proto.TrainArgs(splits=["train"], num_steps=config.train_steps or 0)),
        eval_args=tfx.proto.EvalArgs(splits=["eval"], num_steps=0),
        custom_config={"model_spec": model_spec.to_json(config.spec), "epochs": config.epochs,
                       "batch_size": config.batch_size, "baseline_serving_dir": baseline_dir,
                       "cold_start": config.cold_start, "checkpoint_every_steps": config.checkpoint_every_steps,
                       "checkpoint_every_minutes": config.checkpoint_every_minutes,
                       "train_budget_minutes": config.train_budget_minutes,
                       "matmul_dtype": config.train_matmul_dtype,
                       **({"xla": True} if config.train_xla else {}),
                       **({"data_start_batch": config.train_data_start_batch}
                          if config.train_data_start_batch else {}),
                       **vertex_training_config(config.vertex_training),
                       **({"train_workers": config.train_workers} if config.train_workers > 1 else {})})
    evaluator = SquadEvaluator(
        model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
        transformed_examples=transform.outputs["transformed_examples"], min_f1=config.min_f1,
        version_2_with_negative=config.version_2_with_negative, batch_size=config.spec.predict_batch_size,
        baseline_serving_dir=baseline_dir, max_f1_regression=config.max_f1_regression)
    exporter = TFLiteExporter(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        transform_graph=transform.outputs["transform_graph"], examples=example_gen.outputs["examples"],
        transformed_examples=transform.outputs["transformed_examples"], evaluation=evaluator.outputs["evaluation"],
        variants=config.tflite_variants, max_f1_drop=config.max_f1_drop, push_order=config.tflite_push_order,
        task_library_f1=config.tflite_task_library_f1,
        version_2_with_negative=config.version_2_with_negative)
    # The exporter's own blessing: SquadEvaluator's verdict on the SavedModel and the push rule's
    # choice of model.tflite; its Format-Serving holds only blessed variants, so Pusher ships only those,
    # and each version appears whole (components/pusher).
    pusher = Pusher(
        model=exporter.outputs["exported_model"], model_blessing=exporter.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_dir)))
    reporter = RunReporter(
        examples=example_gen.outputs["examples"], transformed_examples=transform.outputs["transformed_examples"],
        model=trainer.outputs["model"], model_run=trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"], evaluator_blessing=evaluator.outputs["blessing"],
        exported_model=exporter.outputs["exported_model"], export_blessing=exporter.outputs["blessing"],
        pushed_model=pusher.outputs["pushed_model"], settings=report_settings(config),
        version_2_with_negative=config.version_2_with_negative,
        tuner_results=tuner.outputs["tuner_results"] if tuner else None)

    return _pipeline(config, [example_gen, statistics_gen, schema_gen, example_validator, transform,
                              *([tuner] if tuner else []), *([base] if base else []), trainer, evaluator, exporter,
                              pusher, reporter],
                     metadata_connection_config)
