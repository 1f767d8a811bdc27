"""TFX glue for RunReporter, the pipeline's last step.

Artifacts in:
  examples: Examples from SquadExampleGen (eval questions and gold answers; data_report.json).
  transformed_examples: Examples from BertQATransform (window_report.json).
  model: Model from Trainer (training_summary.json). model_run: ModelRun from Trainer
    (TensorBoard logs under train/: the training curve).
  evaluation: ModelEvaluation from SquadEvaluator (metrics.json, predictions.json,
    baseline_predictions.json). evaluator_blessing: its ModelBlessing (verdict, baseline_*).
  exported_model: Model from TFLiteExporter (variants.json). export_blessing: its ModelBlessing
    (the verdict on what ships).
  pushed_model: PushedModel from Pusher (pushed, pushed_destination).
  tuner_results (optional): TunerResults from Tuner (tuner_results.json: the trials and scores).
Artifacts out:
  report: RunReport (bertqa_artifacts.RunReport) with report.html (one self-contained page: headline, data, training
    curve, TFLite variants, sliced metrics, worst questions, baseline, provenance),
    sliced_metrics.json and tfma_eval_result/ (the slices as a TFMA EvalResult, which
    tfma.load_eval_result reads). report.html is also written beside the pushed model.
    Custom properties: report (the page's path), beside_pushed_model, f1 and the
    question count.
"""

from __future__ import annotations

import json
import logging

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, component_spec, standard_artifacts

from bertqa_artifacts import RunReport
from components.run_reporter import core


def _properties(artifact) -> dict:
    """An artifact's custom properties as plain values (through TFX's accessor, which also reads
    the struct values KFP's launcher may pass metadata as)."""
    return {name: artifact.get_custom_property(name) for name in artifact.mlmd_artifact.custom_properties}


class RunReporterSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        "settings": component_spec.ExecutionParameter(type=str),  # JSON: the pipeline's settings
        "version_2_with_negative": component_spec.ExecutionParameter(type=int),
    }
    INPUTS = {
        "examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "transformed_examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "model_run": component_spec.ChannelParameter(type=standard_artifacts.ModelRun),
        "evaluation": component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "evaluator_blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        "exported_model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "export_blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        "pushed_model": component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
        "tuner_results": component_spec.ChannelParameter(type=standard_artifacts.TunerResults, optional=True),
    }
    OUTPUTS = {"report": component_spec.ChannelParameter(type=RunReport)}


def run_artifacts(input_dict, settings: dict) -> core.RunArtifacts:
    def one(key):
        return artifact_utils.get_single_instance(input_dict[key])

    return core.RunArtifacts(
        examples_dir=one("examples").uri, windows_dir=one("transformed_examples").uri, model_dir=one("model").uri,
        model_run_dir=one("model_run").uri, evaluation_dir=one("evaluation").uri,
        exported_model_dir=one("exported_model").uri, examples_properties=_properties(one("examples")),
        evaluator_blessing=_properties(one("evaluator_blessing")), export_blessing=_properties(one("export_blessing")),
        pushed_model=_properties(one("pushed_model")), settings=settings,
        tuner_results_dir=one("tuner_results").uri if input_dict.get("tuner_results") else None)


class RunReporterExecutor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        artifacts = run_artifacts(input_dict, json.loads(exec_properties.get("settings") or "{}"))
        report = core.build_report(artifacts, bool(exec_properties.get("version_2_with_negative")))
        output = artifact_utils.get_single_instance(output_dict["report"])
        files = core.write_report(report, output.uri, model_location=artifacts.model_dir,
                                  data_location=artifacts.examples_dir)
        output.set_string_custom_property("report", files.report)
        output.set_string_custom_property("beside_pushed_model", files.beside_pushed_model or "")
        output.set_float_custom_property("f1", float(report.metrics.get("f1", 0.0)))
        output.set_int_custom_property("questions", len(report.scores))
        logging.info("run report: %s%s", files.report,
                     f" (and {files.beside_pushed_model})" if files.beside_pushed_model else "")


class RunReporter(base_component.BaseComponent):
    """The run report from every artifact of the run (see the module docstring)."""

    SPEC_CLASS = RunReporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RunReporterExecutor)

    def __init__(self, examples: types.BaseChannel, transformed_examples: types.BaseChannel,
                 model: types.BaseChannel, model_run: types.BaseChannel, evaluation: types.BaseChannel,
                 evaluator_blessing: types.BaseChannel, exported_model: types.BaseChannel,
                 export_blessing: types.BaseChannel, pushed_model: types.BaseChannel, settings: dict | None = None,
                 version_2_with_negative: bool = False, tuner_results: types.BaseChannel | None = None):
        super().__init__(spec=RunReporterSpec(
            examples=examples, transformed_examples=transformed_examples, model=model, model_run=model_run,
            evaluation=evaluation, evaluator_blessing=evaluator_blessing, exported_model=exported_model,
            export_blessing=export_blessing, pushed_model=pushed_model, tuner_results=tuner_results,
            settings=json.dumps(settings or {}, sort_keys=True, default=str),
            version_2_with_negative=int(version_2_with_negative),
            report=types.Channel(type=RunReport)))
