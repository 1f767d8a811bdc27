"""run_fn for TFX's Trainer: fine-tune the spec's encoder with a span head on the window examples.

Artifacts in (through Trainer): examples = BertQATransform's transformed_examples
(window records; `train` split for training), transform_graph = the tokenizer artifact.
Artifacts out: model, a SavedModel (see bertqa.serving for its two signatures), at
fn_args.serving_model_dir, and `training_summary.json` at the model artifact's root
(windows, steps, loss, the model's identity, and `warm_started_from`); model_run, TensorBoard
logs under train/ (loss, learning_rate and windows_per_second every 20 steps).

custom_config keys: model_spec (JSON of a BertQaSpec), epochs, batch_size; baseline_serving_dir
(the push destination: the latest model pushed there is the warm start) and cold_start;
checkpoint_every_steps / checkpoint_every_minutes (how often training saves what it needs to
resume); train_budget_minutes (a wall-clock limit: training stops there, with the learning-rate
schedule sized to it; the steps from epochs stay the upper bound); matmul_dtype (auto, bfloat16
or float32: the dtype of the dense layers' matmuls in training steps, see TrainConfig); Trainer's
train_args.num_steps, when set, overrides the step count from epochs.

Resume after a kill: a killed Trainer execution never completes, so the next run starts a new
one with new output directories. The checkpoints therefore live outside them, in
`<pipeline root>/Trainer/checkpoints/<key>/`, where `key` hashes everything that decides the
training (input artifacts, custom_config, steps, the warm-start version): the next execution
with the same key restores the latest checkpoint and trains only the remaining steps. The
directory is removed once the SavedModel is written.

Warm start reads the push destination rather than TFX's `fn_args.base_model`: base_model
needs a resolver node, which open-source Kubeflow Pipelines does not run, and the latest push
is the model SquadEvaluator compares against, so both see the same baseline on every runner.
"""

from __future__ import annotations

import hashlib
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
    baseline, cold_start_reason = latest_baseline(config)
    checkpoints = checkpoint_policy(fn_args, config, steps, baseline)
    resume_file = os.path.join(checkpoints.directory, RESUME_FILE)
    if tf.io.gfile.exists(resume_file):
        # A killed execution of this very training left checkpoints: its weights replace any warm
        # start, and where its own weights came from is what it recorded when it started.
        with tf.io.gfile.GFile(resume_file) as f:
            started = json.load(f)
        warm_started_from, cold_start_reason = started["warm_started_from"], started["cold_start_reason"]
    else:
        warm_started_from = None
        if baseline is not None:
            warm_started_from, cold_start_reason = warm_start(model, identity, baseline)
        tf.io.gfile.makedirs(checkpoints.directory)
        with tf.io.gfile.GFile(resume_file, "w") as f:
            json.dump({"warm_started_from": warm_started_from, "cold_start_reason": cold_start_reason}, f)
    if warm_started_from:
        logging.info("warm start from pushed version %s (model %s)", warm_started_from["version"],
                     warm_started_from["model_id"])
    else:
        logging.info("cold start: %s", cold_start_reason)
    budget_minutes = config.get("train_budget_minutes")
    train_config = training.train_config(spec, batch_size, steps,
                                         time_budget_seconds=60.0 * float(budget_minutes) if budget_minutes else None,
                                         matmul_dtype=config.get("matmul_dtype") or "auto")
    # TensorBoard logs in the ModelRun artifact, as TFX's own Trainer examples write them.
    history = training.train(model, train_files, train_config, log_dir=fn_args.model_run_dir,
                             checkpoints=checkpoints)

    serving.export_saved_model(model, tokenizer.vocab_path, tokenizer.do_lower_case, tokenizer.window,
                               fn_args.serving_model_dir)
    summary = {"train_windows": num_windows, "steps": steps, "batch_size": batch_size, "epochs": epochs,
               "learning_rate": train_config.learning_rate, "final_loss": float(history.history["loss"][-1]),
               "steps_trained": int(model.optimizer.iterations.numpy()),
               "resumed_from_step": history.resumed_from_step,
               "time_budget_seconds": train_config.time_budget_seconds,
               "training_seconds": round(history.training_seconds, 1),
               "stopped_by_time_budget": history.stopped_by_time_budget,
               "matmul_dtype": history.matmul_dtype,
               "identity": identity, "warm_started_from": warm_started_from, "cold_start_reason": cold_start_reason}
    # At the model artifact's root, where SquadEvaluator, TFLiteExporter and `bertqa lineage` find it.
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(fn_args.serving_model_dir.rstrip("/")),
                                        TRAINING_SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    # The model is whole: nothing is left to resume.
    tf.io.gfile.rmtree(checkpoints.directory)


RESUME_FILE = "resume.json"
CHECKPOINTS_SUBDIR = "checkpoints"


def checkpoint_policy(fn_args, config: dict, steps: int,
                      baseline: pushed_models.PushedModel | None) -> training.CheckpointPolicy:
    """The resume checkpoints of this training: a directory keyed by everything that decides it."""
    key_fields = {"train_files": sorted(fn_args.train_files), "transform_output": fn_args.transform_output,
                  "custom_config": {k: v for k, v in sorted(config.items())
                                    if not k.startswith("checkpoint_every")},
                  "steps": steps, "warm_start_version": baseline.version if baseline else None}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    # model_run_dir is <pipeline root>/Trainer/model_run/<execution id>: two levels up is the
    # Trainer's own directory, which every execution of it shares.
    trainer_dir = os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip("/")))
    minutes = config.get("checkpoint_every_minutes")
    return training.CheckpointPolicy(
        directory=os.path.join(trainer_dir, CHECKPOINTS_SUBDIR, key),
        every_steps=int(config["checkpoint_every_steps"]) if config.get("checkpoint_every_steps") else None,
        every_seconds=60.0 * float(minutes) if minutes else training.CheckpointPolicy.every_seconds)


def latest_baseline(config: dict) -> tuple[pushed_models.PushedModel | None, str | None]:
    """(the latest pushed model, None) to warm-start from, or (None, why this is a cold start)."""
    if config.get("cold_start"):
        return None, "cold start requested"
    serving_dir = config.get("baseline_serving_dir")
    if not serving_dir:
        return None, "no push destination to take a baseline from"
    baseline = pushed_models.latest_pushed(serving_dir)
    if baseline is None:
        return None, f"nothing pushed to {serving_dir} yet"
    return baseline, None


def warm_start(model, identity: dict, baseline: pushed_models.PushedModel) -> tuple[dict | None, str | None]:
    """(where the weights came from, None), or (None, why the baseline cannot warm-start this model)."""
    problem = pushed_models.comparability_problem(identity, baseline.record.get("identity", {}))
    if problem is None:
        problem = training.warm_start(model, baseline.saved_model_dir)
    if problem is not None:
        return None, f"pushed version {baseline.version} cannot warm-start this model: {problem}"
    return {"version": baseline.version, "model_id": baseline.model_id, "span": baseline.span,
            "saved_model_dir": baseline.saved_model_dir}, None
