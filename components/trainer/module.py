"""run_fn for TFX's Trainer: fine-tune the spec's encoder with a span head on the window examples.

Artifacts in (through Trainer): examples = BertQATransform's transformed_examples
(window records; `train` split for training), transform_graph = the tokenizer artifact.
Artifacts out: model, a SavedModel (see bertqa.serving for its two signatures), at
fn_args.serving_model_dir, and `training_summary.json` at the model artifact's root
(windows, steps, loss, the model's identity, and `warm_started_from`); model_run, TensorBoard
logs under train/ (loss, learning_rate and windows_per_second every 20 steps).

custom_config keys: model_spec (JSON of a BertQaSpec), epochs, batch_size; baseline_serving_dir
(the push destination: the latest model pushed there is the warm start) and cold_start;
Trainer's train_args.num_steps, when set, overrides the step count from epochs.

Warm start reads the push destination rather than TFX's `fn_args.base_model`: base_model
needs a resolver node, which open-source Kubeflow Pipelines does not run, and the latest push
is the model SquadEvaluator compares against, so both see the same baseline on every runner.
"""

from __future__ import annotations

import json
import logging
import math
import os

import tensorflow as tf

from bertqa import model_spec, pushed_models, serving, training
from components.bert_qa_transform.core import read_tokenizer_artifact

TRAINING_SUMMARY_FILE = "training_summary.json"


def count_records(files: list[str]) -> int:
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())


def run_fn(fn_args) -> None:
    config = fn_args.custom_config or {}
    spec = model_spec.from_json(config["model_spec"])
    batch_size = int(config.get("batch_size") or spec.default_batch_size)
    epochs = float(config.get("epochs") or spec.default_training_epochs)
    tokenizer = read_tokenizer_artifact(fn_args.transform_output)

    train_files = [f for pattern in fn_args.train_files for f in tf.io.gfile.glob(pattern)]
    num_windows = count_records(train_files)
    steps = fn_args.train_steps or max(1, math.ceil(num_windows * epochs / batch_size))
    logging.info("%d training windows, %.2f epochs, batch %d -> %d steps", num_windows, epochs, batch_size, steps)

    # Seeded before the model exists, so the same data and settings give the same initialisation
    # (of the span head and any random encoder) and dropout masks, whatever ran before in the process.
    tf.random.set_seed(training.DEFAULT_SEED)
    model = training.build_model(spec)
    identity = pushed_models.model_identity(json.loads(config["model_spec"]), tokenizer.vocab_path)
    warm_started_from, cold_start_reason = warm_start(model, identity, config)
    if warm_started_from:
        logging.info("warm start from pushed version %s (model %s)", warm_started_from["version"],
                     warm_started_from["model_id"])
    else:
        logging.info("cold start: %s", cold_start_reason)
    train_config = training.train_config(spec, batch_size, steps)
    # TensorBoard logs in the ModelRun artifact, as TFX's own Trainer examples write them.
    history = training.train(model, train_files, train_config, log_dir=fn_args.model_run_dir)

    serving.export_saved_model(model, tokenizer.vocab_path, tokenizer.do_lower_case, tokenizer.window,
                               fn_args.serving_model_dir)
    summary = {"train_windows": num_windows, "steps": steps, "batch_size": batch_size, "epochs": epochs,
               "learning_rate": train_config.learning_rate, "final_loss": float(history.history["loss"][-1]),
               "identity": identity, "warm_started_from": warm_started_from, "cold_start_reason": cold_start_reason}
    # At the model artifact's root, where SquadEvaluator, TFLiteExporter and `bertqa lineage` find it.
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(fn_args.serving_model_dir.rstrip("/")),
                                        TRAINING_SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)


def warm_start(model, identity: dict, config: dict) -> tuple[dict | None, str | None]:
    """(where the weights came from, None), or (None, why this is a cold start)."""
    if config.get("cold_start"):
        return None, "cold start requested"
    serving_dir = config.get("baseline_serving_dir")
    if not serving_dir:
        return None, "no push destination to take a baseline from"
    baseline = pushed_models.latest_pushed(serving_dir)
    if baseline is None:
        return None, f"nothing pushed to {serving_dir} yet"
    problem = pushed_models.comparability_problem(identity, baseline.record.get("identity", {}))
    if problem is None:
        problem = training.warm_start(model, baseline.saved_model_dir)
    if problem is not None:
        return None, f"pushed version {baseline.version} cannot warm-start this model: {problem}"
    return {"version": baseline.version, "model_id": baseline.model_id, "span": baseline.span,
            "saved_model_dir": baseline.saved_model_dir}, None
