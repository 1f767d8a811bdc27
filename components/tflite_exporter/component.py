"""TFX glue for TFLiteExporter.

Artifacts in:
  model: Model from Trainer (SavedModel with the `logits` signature, under Format-Serving).
  model_blessing: ModelBlessing from SquadEvaluator; nothing is exported unless blessed.
  transform_graph: the tokenizer artifact from BertQATransform (vocab.txt, settings).
  examples: Examples from SquadExampleGen (raw questions and gold answers; `eval` split).
  transformed_examples: Examples from BertQATransform (windows: `eval` split to score the
    variants on, `train` split to calibrate int8).
  evaluation (optional): ModelEvaluation from SquadEvaluator, whose metrics.json gives the
    float SavedModel's F1 the variants are compared with; without it the exporter scores
    the SavedModel itself, with the same function.
Artifacts out:
  exported_model: Model. variants.json at its root (every variant's figures and
    verdict); Format-Serving/ holds, only when the push is blessed, model.tflite (the
    variant the push rule chose, core.ExportPlan.push_order; one signature seq_<L> per window length L, 384 in
    subgraph 0; inputs [1, L] int32, every tensor static-sized, named ids/mask/segment_ids in the metadata,
    outputs start_logits/end_logits, the vocab packed inside), model_<variant>.tflite for each other blessed
    variant, vocab.txt
    variants.json and model_record.json (bertqa.operations.pushed_models: the SavedModel it came from,
    its span, metrics, baseline and warm start): what Pusher copies to the serving
    directory, and where the next run finds its baseline. Variants that are
    not pushed stay under candidates/.
    Custom properties: exported (1/0), quantization (the variant pushed as model.tflite,
    '' when none), push_reason (why that one, or why none), size_bytes (of model.tflite),
    variants, pushed_variants, saved_model_exact_match,
    saved_model_f1, and per variant <variant>_{size_bytes, latency_ms_1_thread,
    latency_ms_2_threads (one 384-token window, in <variant>_tflite_runtime, LiteRT by default),
    question_ms_median_1_thread, question_ms_p90_1_thread, question_ms_median_2_threads,
    question_ms_p90_2_threads (per eval question at its own length), memory_mb (what a LiteRT
    process grows by with the file loaded), task_library_ms_1_thread,
    task_library_ms_2_threads (one Task Library answer), xnnpack_ops, xnnpack_delegated_ops,
    xnnpack_outside (op names), dynamic_tensors, exact_match, f1, f1_drop, max_f1_drop,
    task_library_ok, task_library_problems, blessed, reason}, and with task_library_f1
    <variant>_{task_library_exact_match, task_library_f1, task_library_agreement}.
  blessing: ModelBlessing for Pusher: `blessed` 1 only when SquadEvaluator blessed the
    SavedModel and a variant of the push order is blessed (its F1 drop within its limit); `reason`, and
    blessed_<variant> per variant; a BLESSED or NOT_BLESSED file, as TFX's Evaluator writes.
"""

from __future__ import annotations

import json
import logging
import os

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, component_spec, standard_artifacts
from tfx.utils import path_utils

from bertqa.model import evaluation
from components.bert_qa_transform.tokenizer_artifact import read_tokenizer_artifact
from components.blessing import write_verdict_file
from components.tflite_exporter import core
from components.trainer.phases import TRAINING_SUMMARY_FILE

EVAL_SPLIT = "eval"
TRAIN_SPLIT = "train"


class TFLiteExporterSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        "variants": component_spec.ExecutionParameter(type=str),  # JSON list
        "push_order": component_spec.ExecutionParameter(type=str),  # JSON list: tried for model.tflite, in order
        "max_f1_drop": component_spec.ExecutionParameter(type=str),  # JSON object, variant -> points
        "version_2_with_negative": component_spec.ExecutionParameter(type=int),
        "n_best_size": component_spec.ExecutionParameter(type=int),
        "max_answer_length": component_spec.ExecutionParameter(type=int),
        "representative_steps": component_spec.ExecutionParameter(type=int),
        "eval_threads": component_spec.ExecutionParameter(type=int),  # 0: every CPU
        "latency_runs": component_spec.ExecutionParameter(type=int),
        "task_library_f1": component_spec.ExecutionParameter(type=int),  # 1: also score in the Task Library
    }
    INPUTS = {
        "model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        "transform_graph": component_spec.ChannelParameter(type=standard_artifacts.TransformGraph),
        "examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "transformed_examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "evaluation": component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {
        "exported_model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


def _split_files(artifacts, split: str) -> str:
    return os.path.join(artifact_utils.get_split_uri(artifacts, split), "*")


def _plan(exec_properties, tokenizer) -> core.ExportPlan:
    return core.ExportPlan(
        variants=tuple(json.loads(exec_properties["variants"])),
        # Pipelines compiled before the push rule have no push_order: they get today's default.
        push_order=tuple(json.loads(exec_properties.get("push_order") or "null") or core.DEFAULT_PUSH_ORDER),
        max_f1_drop=json.loads(exec_properties["max_f1_drop"]),
        seq_len=tokenizer.window.seq_len, query_len=tokenizer.window.query_len,
        do_lower_case=tokenizer.do_lower_case, representative_steps=exec_properties["representative_steps"],
        eval_threads=exec_properties["eval_threads"] or None, latency_runs=exec_properties["latency_runs"],
        task_library_f1=bool(exec_properties.get("task_library_f1", 0)))


def _record(exported, blessing, report: core.ExportReport) -> None:
    """The report as custom properties: on the exported model (figures) and the blessing (verdicts)."""
    exported.set_string_custom_property("variants", ",".join(v.variant for v in report.variants))
    exported.set_string_custom_property("pushed_variants", ",".join(report.pushed_variants))
    if report.saved_model is not None:
        exported.set_float_custom_property("saved_model_exact_match", report.saved_model.exact_match)
        exported.set_float_custom_property("saved_model_f1", report.saved_model.f1)
    for v in report.variants:
        exported.set_int_custom_property(f"{v.variant}_size_bytes", v.size_bytes)
        exported.set_string_custom_property(f"{v.variant}_tflite_runtime", v.tflite_runtime)
        for threads, ms in v.latency_ms.items():
            exported.set_float_custom_property(f"{v.variant}_latency_ms_{threads}_thread{'s' * (threads > 1)}", ms)
        for threads, figures in v.question_latency_ms.items():
            for statistic in ("median", "p90"):
                exported.set_float_custom_property(
                    f"{v.variant}_question_ms_{statistic}_{threads}_thread{'s' * (threads > 1)}", figures[statistic])
        if "model_mb" in v.memory_mb:
            exported.set_float_custom_property(f"{v.variant}_memory_mb", v.memory_mb["model_mb"])
        for threads, ms in v.task_library_latency_ms.items():
            exported.set_float_custom_property(
                f"{v.variant}_task_library_ms_{threads}_thread{'s' * (threads > 1)}", ms)
        if v.xnnpack:
            exported.set_int_custom_property(f"{v.variant}_xnnpack_ops", v.xnnpack["nodes"])
            exported.set_int_custom_property(f"{v.variant}_xnnpack_delegated_ops", v.xnnpack["delegated"])
            exported.set_string_custom_property(f"{v.variant}_xnnpack_outside", ",".join(
                f"{name}:{count}" for name, count in v.xnnpack["outside"].items()))
            exported.set_int_custom_property(f"{v.variant}_dynamic_tensors", len(v.xnnpack["dynamic_tensors"]))
        for name in ("exact_match", "f1", "f1_drop", "max_f1_drop"):
            exported.set_float_custom_property(f"{v.variant}_{name}", float(getattr(v, name)))
        exported.set_int_custom_property(f"{v.variant}_task_library_ok", int(v.task_library_ok))
        for name in ("task_library_exact_match", "task_library_f1", "task_library_agreement"):
            if getattr(v, name) is not None:
                exported.set_float_custom_property(f"{v.variant}_{name}", float(getattr(v, name)))
        exported.set_string_custom_property(f"{v.variant}_task_library_problems", "; ".join(v.task_library_problems))
        exported.set_int_custom_property(f"{v.variant}_blessed", int(v.blessed))
        exported.set_string_custom_property(f"{v.variant}_reason", v.reason)
        blessing.set_int_custom_property(f"blessed_{v.variant}", int(v.blessed))
    # The push rule's choice: which variant is model.tflite, and why (or why nothing is).
    exported.set_string_custom_property("quantization", report.pushed_variant or "")
    exported.set_string_custom_property("push_reason", report.push_reason)
    if report.pushed_variant:
        exported.set_int_custom_property("size_bytes", report.variant(report.pushed_variant).size_bytes)
    exported.set_int_custom_property("exported", int(bool(report.variants)))
    # Last: until here, a failure leaves the blessing without `blessed`, which Pusher reads as not blessed.
    blessing.set_string_custom_property("reason", report.reason)
    blessing.set_int_custom_property("blessed", int(report.blessed))
    write_verdict_file(blessing.uri, report.blessed, report.reason)


def _read_json(path: str) -> dict:
    if not fileio.exists(path):
        return {}
    with fileio.open(path) as f:
        return json.load(f)


def _model_record(model, input_dict, report: core.ExportReport, saved_model_dir: str) -> dict:
    examples = artifact_utils.get_single_instance(input_dict["examples"])
    example_props = {name: examples.get_custom_property(name) for name in ("span", "version", "input_fingerprint")
                     if examples.has_custom_property(name)}
    metrics = {}
    if input_dict.get("evaluation"):
        metrics = _read_json(os.path.join(artifact_utils.get_single_uri(input_dict["evaluation"]), "metrics.json"))
    return core.model_record(model.id, saved_model_dir, _read_json(os.path.join(model.uri, TRAINING_SUMMARY_FILE)),
                             {**example_props, "uri": examples.uri}, metrics, report)


class TFLiteExporterExecutor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        exported = artifact_utils.get_single_instance(output_dict["exported_model"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing.set_string_custom_property("current_model", model.uri)
        blessing.set_int_custom_property("current_model_id", model.id)
        if not model_utils.is_model_blessed(artifact_utils.get_single_instance(input_dict["model_blessing"])):
            logging.info("SavedModel not blessed by SquadEvaluator; no TFLite export.")
            _record(exported, blessing, core.not_exported(exported.uri, "SquadEvaluator did not bless the SavedModel"))
            return

        tokenizer = read_tokenizer_artifact(artifact_utils.get_single_uri(input_dict["transform_graph"]))
        plan = _plan(exec_properties, tokenizer)
        saved_model_dir = path_utils.serving_model_path(model.uri)
        eval_config = evaluation.EvalConfig(
            n_best_size=exec_properties["n_best_size"], max_answer_length=exec_properties["max_answer_length"],
            version_2_with_negative=bool(exec_properties["version_2_with_negative"]))
        data = core.load_eval_data(_split_files(input_dict["examples"], EVAL_SPLIT),
                                   _split_files(input_dict["transformed_examples"], EVAL_SPLIT))
        representative = []
        if "int8" in (*plan.variants, *plan.push_order):
            train_windows = evaluation.read_windows(_split_files(input_dict["transformed_examples"], TRAIN_SPLIT))
            representative = core.representative_windows(train_windows, plan.representative_steps)
        if input_dict.get("evaluation"):
            reference, eval_config = core.read_reference(artifact_utils.get_single_uri(input_dict["evaluation"]),
                                                         eval_config)
        else:
            reference = core.saved_model_metrics(saved_model_dir, data, eval_config)
        report = core.export_variants(saved_model_dir, tokenizer.vocab_path, exported.uri,
                                      path_utils.serving_model_dir(exported.uri), plan, data, reference,
                                      eval_config, representative, upstream_blessed=True)
        for v in report.variants:
            for problem in v.task_library_problems:
                logging.warning("TFLite %s and the Task Library: %s", v.variant, problem)
        if report.blessed:
            core.write_model_record(_model_record(model, input_dict, report, saved_model_dir),
                                    path_utils.serving_model_dir(exported.uri))
        _record(exported, blessing, report)


class TFLiteExporter(base_component.BaseComponent):
    """Blessed SavedModel -> every quantization variant, scored and blessed (see the module docstring)."""

    SPEC_CLASS = TFLiteExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(TFLiteExporterExecutor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 transform_graph: types.BaseChannel, examples: types.BaseChannel,
                 transformed_examples: types.BaseChannel, evaluation: types.BaseChannel | None = None,
                 variants=core.DEFAULT_VARIANTS, max_f1_drop=None, push_order=core.DEFAULT_PUSH_ORDER,
                 version_2_with_negative: bool = False,
                 n_best_size: int = 20, max_answer_length: int = 30, representative_steps: int = 100,
                 eval_threads: int = 0, latency_runs: int = 10, task_library_f1: bool = False):
        # Validated now, when the pipeline is built, rather than after training.
        plan = core.ExportPlan(variants=core.parse_variants(variants), max_f1_drop=dict(max_f1_drop or {}),
                               push_order=core.parse_variants(push_order),
                               representative_steps=representative_steps, latency_runs=latency_runs)
        super().__init__(spec=TFLiteExporterSpec(
            model=model, model_blessing=model_blessing, transform_graph=transform_graph, examples=examples,
            transformed_examples=transformed_examples, evaluation=evaluation,
            variants=json.dumps(list(plan.variants)), push_order=json.dumps(list(plan.push_order)),
            max_f1_drop=json.dumps(dict(plan.max_f1_drop)),
            version_2_with_negative=int(version_2_with_negative), n_best_size=n_best_size,
            max_answer_length=max_answer_length, representative_steps=representative_steps,
            eval_threads=eval_threads, latency_runs=latency_runs, task_library_f1=int(task_library_f1),
            exported_model=types.Channel(type=standard_artifacts.Model),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
