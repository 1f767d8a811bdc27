"""TFX glue for SquadEvaluator.

Artifacts in:
  model: Model from Trainer (SavedModel with the `logits` signature, under Format-Serving).
  examples: Examples from SquadExampleGen (gold answers and contexts; `eval` split).
  transformed_examples: Examples from BertQATransform (windows; `eval` split).
Artifacts out:
  evaluation: ModelEvaluation with metrics.json (official SQuAD keys, 0-100 scale; for SQuAD
    2.0 with tune_null_threshold, the predictions and metrics at the null-score threshold
    that maximises F1 on the eval split, with the untuned figures as untuned_*),
    predictions.json and nbest_predictions.json (and null_odds.json for SQuAD 2.0;
    baseline_predictions.json, the baseline's answers, when one was scored);
    the metrics are also custom properties of the artifact.
  blessing: ModelBlessing, custom property `blessed` 1/0 (what Pusher checks), and a
    BLESSED or NOT_BLESSED file, as TFX's own Evaluator writes. With a baseline (the latest
    model pushed to `baseline_serving_dir`, scored on the same eval windows in this
    execution): baseline_version, baseline_model_id, baseline_span, baseline_f1 (and the
    other baseline_* metrics), f1_delta, or baseline_problem when it cannot be compared.

The baseline is read from the push destination, not from a TFX resolver, so that it is the
model that was actually pushed and the lookup works on open-source Kubeflow Pipelines,
which runs no resolver nodes (see bertqa.operations.pushed_models).
"""

from __future__ import annotations

import json
import logging
import os

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, component_spec, standard_artifacts
from tfx.utils import path_utils

from bertqa.model import evaluation
from bertqa.operations import pushed_models
from components.blessing import write_verdict_file
from components.squad_evaluator import core
from components.trainer.phases import TRAINING_SUMMARY_FILE

EVAL_SPLIT = "eval"


class SquadEvaluatorSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        "min_f1": component_spec.ExecutionParameter(type=float),
        "n_best_size": component_spec.ExecutionParameter(type=int),
        "max_answer_length": component_spec.ExecutionParameter(type=int),
        "version_2_with_negative": component_spec.ExecutionParameter(type=int),
        "batch_size": component_spec.ExecutionParameter(type=int),
        "tune_null_threshold": component_spec.ExecutionParameter(type=int),
        # The push destination whose latest version is the baseline; "" for none.
        "baseline_serving_dir": component_spec.ExecutionParameter(type=str),
        "max_f1_regression": component_spec.ExecutionParameter(type=float),
    }
    INPUTS = {
        "model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "transformed_examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {
        "evaluation": component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class SquadEvaluatorExecutor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        model = artifact_utils.get_single_instance(input_dict["model"])
        evaluation_artifact = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        eval_config = evaluation.EvalConfig(
            n_best_size=exec_properties["n_best_size"], max_answer_length=exec_properties["max_answer_length"],
            version_2_with_negative=bool(exec_properties["version_2_with_negative"]),
            batch_size=exec_properties["batch_size"])
        baseline = None
        if exec_properties.get("baseline_serving_dir"):
            pushed = pushed_models.latest_pushed(exec_properties["baseline_serving_dir"])
            baseline = core.Baseline.from_pushed(pushed) if pushed is not None else None
        result = core.evaluate_saved_model(
            path_utils.serving_model_path(model.uri),
            os.path.join(artifact_utils.get_split_uri(input_dict["examples"], EVAL_SPLIT), "*"),
            os.path.join(artifact_utils.get_split_uri(input_dict["transformed_examples"], EVAL_SPLIT), "*"),
            eval_config, core.BlessingConfig(min_f1=exec_properties["min_f1"],
                                             max_f1_regression=exec_properties.get("max_f1_regression") or 0.0),
            evaluation_artifact.uri, tune_null_threshold=bool(exec_properties["tune_null_threshold"]),
            baseline=baseline, candidate_identity=_identity(model.uri))
        logging.info("SQuAD metrics %s; %s", result.metrics, result.reason)
        for name, value in result.metrics.items():
            evaluation_artifact.set_float_custom_property(name, float(value))
            blessing.set_float_custom_property(name, float(value))
        for name, value in core.comparison_summary(result.comparison, result.metrics["f1"]).items():
            if isinstance(value, str):
                blessing.set_string_custom_property(name, value)
            elif isinstance(value, int):
                blessing.set_int_custom_property(name, value)
            else:
                blessing.set_float_custom_property(name, float(value))
        blessing.set_int_custom_property("blessed", int(result.blessed))
        blessing.set_string_custom_property("reason", result.reason)
        blessing.set_string_custom_property("current_model", model.uri)
        blessing.set_int_custom_property("current_model_id", model.id)
        write_verdict_file(blessing.uri, result.blessed, result.reason)


def _identity(model_uri: str) -> dict | None:
    """The candidate's identity (spec, vocabulary, windowing), from the Trainer's summary."""
    path = os.path.join(model_uri, TRAINING_SUMMARY_FILE)
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return json.load(f).get("identity")


class SquadEvaluator(base_component.BaseComponent):
    """SQuAD EM/F1 on the eval split and a blessing against `min_f1` (see the module docstring)."""

    SPEC_CLASS = SquadEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(SquadEvaluatorExecutor)

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 transformed_examples: types.BaseChannel, min_f1: float = 40.0, n_best_size: int = 20,
                 max_answer_length: int = 30, version_2_with_negative: bool = False, batch_size: int = 64,
                 tune_null_threshold: bool = True, baseline_serving_dir: str = "",
                 max_f1_regression: float = 0.0):
        super().__init__(spec=SquadEvaluatorSpec(
            model=model, examples=examples, transformed_examples=transformed_examples,
            min_f1=float(min_f1), n_best_size=n_best_size, max_answer_length=max_answer_length,
            version_2_with_negative=int(version_2_with_negative), batch_size=batch_size,
            tune_null_threshold=int(tune_null_threshold), baseline_serving_dir=baseline_serving_dir or "",
            max_f1_regression=float(max_f1_regression),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
