"""tuner_fn for TFX's Tuner: a search over the span model's optimisation settings (bertqa.model.tuning).

Artifacts in (through Tuner): examples = BertQATransform's transformed_examples (the `train`
split's windows; the eval split is not read), transform_graph = the tokenizer artifact.
Artifacts out (written by TFX's Tuner executor from the returned tuner): best_hyperparameters
(best_hyperparameters.txt, a KerasTuner HyperParameters config, which the Trainer takes as
fn_args.hyperparameters) and tuner_results (tuner_results.json: every completed trial's id,
score and values).

custom_config keys: model_spec (JSON of a BertQaSpec) and batch_size, as the Trainer's;
tuning (a JSON object of bertqa.model.tuning.TuningConfig's fields); matmul_dtype.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow as tf
from tfx.components.tuner.component import TunerFnResult

from bertqa.model import model_spec, tuning


def tuning_config(custom_config: dict) -> tuning.TuningConfig:
    fields = json.loads(custom_config.get("tuning") or "{}")
    known = {f.name for f in dataclasses.fields(tuning.TuningConfig)}
    if set(fields) - known:
        raise ValueError(f"the Tuner's custom_config tuning names {sorted(set(fields) - known)}; "
                         f"it takes {sorted(known)}")
    return tuning.TuningConfig(**fields)


def tuner_fn(fn_args) -> TunerFnResult:
    config = dict(fn_args.custom_config or {})
    spec = model_spec.from_json(config["model_spec"])
    batch_size = int(config.get("batch_size") or spec.default_batch_size)
    settings = tuning_config(config)
    train_files = [f for pattern in fn_args.train_files for f in tf.io.gfile.glob(pattern)]
    split = tuning.write_tuning_split(train_files, os.path.join(fn_args.working_dir, "split"), settings)
    logging.info("tuning on %d training windows, scored on %d held-out windows (%d paragraphs of the train "
                 "split); up to %d trials in %.0f minutes", split.train_windows, split.validation_windows,
                 split.paragraphs, settings.max_trials, settings.budget_minutes)
    tuner = tuning.SpanModelTuner(spec, batch_size, split, settings, directory=fn_args.working_dir,
                                  matmul_dtype=config.get("matmul_dtype") or "auto")
    return TunerFnResult(tuner=tuner, fit_kwargs={})
