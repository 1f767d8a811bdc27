"""The pure core of SquadEvaluator: evaluate a SavedModel on eval windows and decide the blessing."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from bertqa.model import evaluation, postprocess
from bertqa.operations import pushed_models

# The baseline's {id: answer} on the same eval split, beside predictions.json (the run report's
# per-slice comparison reads it).
BASELINE_PREDICTIONS_FILE = "baseline_predictions.json"


@dataclasses.dataclass(frozen=True)
class BlessingConfig:
    """A model is blessed when its F1 (0-100) reaches `min_f1` and, when there is a baseline
    (the model pushed last), is at most `max_f1_regression` points below the baseline's F1
    on the same eval split."""

    min_f1: float = 40.0
    max_f1_regression: float = 0.0


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The model to beat: the latest pushed version (bertqa.operations.pushed_models)."""

    version: str
    model_id: int | None
    saved_model_dir: str
    identity: dict
    span: int | None = None

    @classmethod
    def from_pushed(cls, pushed: pushed_models.PushedModel) -> Baseline:
        return cls(version=pushed.version, model_id=pushed.model_id, saved_model_dir=pushed.saved_model_dir,
                   identity=pushed.record.get("identity", {}), span=pushed.span)


@dataclasses.dataclass(frozen=True)
class BaselineComparison:
    baseline: Baseline
    metrics: dict[str, float] | None  # None when it could not be scored
    problem: str | None  # why it cannot be compared (the candidate is then not blessed)
    answers: dict[str, str] | None = None  # the baseline's answer per question id (for sliced comparisons)

    def delta(self, candidate_f1: float) -> float | None:
        return None if self.metrics is None else candidate_f1 - self.metrics["f1"]


@dataclasses.dataclass(frozen=True)
class EvaluatorResult:
    metrics: dict[str, float]
    blessed: bool
    reason: str
    comparison: BaselineComparison | None = None


def bless(metrics: dict[str, float], config: BlessingConfig,
          comparison: BaselineComparison | None = None) -> tuple[bool, str]:
    """The verdict and its reason. Without a baseline (a first run) min_f1 alone decides;
    a baseline that cannot be compared fails closed."""
    f1 = metrics["f1"]
    if f1 < config.min_f1:
        return False, f"f1 {f1:.2f} < min_f1 {config.min_f1:.2f}"
    absolute = f"f1 {f1:.2f} >= min_f1 {config.min_f1:.2f}"
    if comparison is None:
        return True, f"{absolute}; no baseline (nothing pushed yet)"
    named = f"baseline version {comparison.baseline.version} (model {comparison.baseline.model_id})"
    if comparison.problem is not None:
        return False, f"{absolute}, but {named} cannot be compared: {comparison.problem}"
    delta = comparison.delta(f1)
    if delta < -config.max_f1_regression:
        return False, (f"{absolute}, but {delta:+.2f} F1 against {named} (f1 {comparison.metrics['f1']:.2f}), "
                       f"worse than the tolerance of {config.max_f1_regression:.2f}")
    return True, (f"{absolute}; {delta:+.2f} F1 against {named} (f1 {comparison.metrics['f1']:.2f}), "
                  f"within the tolerance of {config.max_f1_regression:.2f}")


def _with_tuned_null_threshold(examples, windows, starts, ends, eval_config, result) -> evaluation.EvalResult:
    """SQuAD 2.0: predictions and metrics at the null-score threshold that maximises F1 on this split.

    As BERT's run_squad recommends, the threshold is tuned on the evaluation split; the
    official `best_f1_thresh` is in the units of null_odds (null score minus best span
    score), which is exactly what `null_score_diff_threshold` compares against. The untuned
    figures stay in the metrics under `untuned_*`, and the tuned threshold is recorded, so
    the number is never mistaken for one measured on unseen data.
    """
    threshold = float(result.metrics["best_f1_thresh"])
    tuned = evaluation.score(examples, windows, starts, ends,
                             dataclasses.replace(eval_config, null_score_diff_threshold=threshold))
    untuned = {f"untuned_{key}": value for key, value in result.metrics.items()
               if key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")}
    metrics = {**tuned.metrics, **untuned, "null_score_diff_threshold": threshold}
    return evaluation.EvalResult(metrics=metrics, predictions=tuned.predictions)


def _score_saved_model(saved_model_dir, examples, windows, eval_config, tune_null_threshold) -> evaluation.EvalResult:
    starts, ends = evaluation.predict_logits(evaluation.saved_model_logits_fn(saved_model_dir), windows,
                                             eval_config.batch_size)
    result = evaluation.score(examples, windows, starts, ends, eval_config)
    if eval_config.version_2_with_negative and tune_null_threshold:
        result = _with_tuned_null_threshold(examples, windows, starts, ends, eval_config, result)
    return result


def compare_with_baseline(baseline: Baseline, candidate_identity: dict | None, examples, windows,
                          eval_config: evaluation.EvalConfig, tune_null_threshold: bool) -> BaselineComparison:
    """The baseline scored on the candidate's windows, or why it cannot be.

    The same windows serve both models only when their identities (spec, vocabulary,
    windowing) agree; otherwise the comparison would measure the tokenizer, not the model.
    """
    if candidate_identity is None:
        return BaselineComparison(baseline, None, "the candidate has no identity record (training_summary.json)")
    problem = pushed_models.comparability_problem(candidate_identity, baseline.identity)
    if problem is None and not tf.io.gfile.exists(os.path.join(baseline.saved_model_dir, "saved_model.pb")):
        problem = f"its SavedModel {baseline.saved_model_dir} is gone (was the pipeline root cleaned?)"
    if problem is not None:
        return BaselineComparison(baseline, None, problem)
    result = _score_saved_model(baseline.saved_model_dir, examples, windows, eval_config, tune_null_threshold)
    return BaselineComparison(baseline, result.metrics, None, dict(result.predictions.answers))


def comparison_summary(comparison: BaselineComparison | None, candidate_f1: float) -> dict:
    """The baseline's figures as flat keys (metrics.json, the blessing's custom properties)."""
    if comparison is None:
        return {}
    summary = {"baseline_version": comparison.baseline.version, "baseline_model_id": comparison.baseline.model_id,
               "baseline_span": comparison.baseline.span, "baseline_saved_model": comparison.baseline.saved_model_dir,
               "baseline_problem": comparison.problem}
    if comparison.metrics is not None:
        summary.update({f"baseline_{key}": value for key, value in comparison.metrics.items()})
        summary["f1_delta"] = comparison.delta(candidate_f1)
    return {key: value for key, value in summary.items() if value is not None}


def evaluate_saved_model(saved_model_dir: str, examples_pattern: str, windows_pattern: str,
                         eval_config: evaluation.EvalConfig, blessing: BlessingConfig,
                         output_dir: str, tune_null_threshold: bool = True, baseline: Baseline | None = None,
                         candidate_identity: dict | None = None) -> EvaluatorResult:
    examples = evaluation.read_examples(examples_pattern)
    windows = evaluation.read_windows(windows_pattern)
    result = _score_saved_model(saved_model_dir, examples, windows, eval_config, tune_null_threshold)
    comparison = None
    if baseline is not None:
        comparison = compare_with_baseline(baseline, candidate_identity, examples, windows, eval_config,
                                           tune_null_threshold)
    blessed, reason = bless(result.metrics, blessing, comparison)
    os.makedirs(output_dir, exist_ok=True)
    postprocess.write_prediction_files(result.predictions, output_dir, eval_config.version_2_with_negative)
    if comparison is not None and comparison.answers is not None:
        with open(os.path.join(output_dir, BASELINE_PREDICTIONS_FILE), "w") as f:
            json.dump(comparison.answers, f, indent=2)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump({**result.metrics, "questions": len(examples), "windows": len(windows),
                   "blessed": blessed, "reason": reason,
                   **comparison_summary(comparison, result.metrics["f1"])}, f, indent=2)
    return EvaluatorResult(metrics=result.metrics, blessed=blessed, reason=reason, comparison=comparison)
