"""The pure core of SquadEvaluator: evaluate a SavedModel on eval windows and decide the blessing."""

from __future__ import annotations

import dataclasses
import json
import os

from bertqa import evaluation, postprocess


@dataclasses.dataclass(frozen=True)
class BlessingConfig:
    """A model is blessed when its F1 (0-100) reaches `min_f1`."""

    min_f1: float = 40.0


@dataclasses.dataclass(frozen=True)
class EvaluatorResult:
    metrics: dict[str, float]
    blessed: bool
    reason: str


def bless(metrics: dict[str, float], config: BlessingConfig) -> tuple[bool, str]:
    f1 = metrics["f1"]
    if f1 >= config.min_f1:
        return True, f"f1 {f1:.2f} >= min_f1 {config.min_f1:.2f}"
    return False, f"f1 {f1:.2f} < min_f1 {config.min_f1:.2f}"


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


def evaluate_saved_model(saved_model_dir: str, examples_pattern: str, windows_pattern: str,
                         eval_config: evaluation.EvalConfig, blessing: BlessingConfig,
                         output_dir: str, tune_null_threshold: bool = True) -> EvaluatorResult:
    examples = evaluation.read_examples(examples_pattern)
    windows = evaluation.read_windows(windows_pattern)
    starts, ends = evaluation.predict_logits(evaluation.saved_model_logits_fn(saved_model_dir), windows,
                                             eval_config.batch_size)
    result = evaluation.score(examples, windows, starts, ends, eval_config)
    if eval_config.version_2_with_negative and tune_null_threshold:
        result = _with_tuned_null_threshold(examples, windows, starts, ends, eval_config, result)
    blessed, reason = bless(result.metrics, blessing)
    os.makedirs(output_dir, exist_ok=True)
    postprocess.write_prediction_files(result.predictions, output_dir, eval_config.version_2_with_negative)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump({**result.metrics, "questions": len(examples), "windows": len(windows),
                   "blessed": blessed, "reason": reason}, f, indent=2)
    return EvaluatorResult(metrics=result.metrics, blessed=blessed, reason=reason)
