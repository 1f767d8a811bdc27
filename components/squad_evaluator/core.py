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


def evaluate_saved_model(saved_model_dir: str, examples_pattern: str, windows_pattern: str,
                         eval_config: evaluation.EvalConfig, blessing: BlessingConfig,
                         output_dir: str) -> EvaluatorResult:
    examples = evaluation.read_examples(examples_pattern)
    windows = evaluation.read_windows(windows_pattern)
    result = evaluation.evaluate(evaluation.saved_model_logits_fn(saved_model_dir), examples, windows, eval_config)
    blessed, reason = bless(result.metrics, blessing)
    os.makedirs(output_dir, exist_ok=True)
    postprocess.write_prediction_files(result.predictions, output_dir, eval_config.version_2_with_negative)
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump({**result.metrics, "questions": len(examples), "windows": len(windows),
                   "blessed": blessed, "reason": reason}, f, indent=2)
    return EvaluatorResult(metrics=result.metrics, blessed=blessed, reason=reason)
