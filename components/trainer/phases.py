"""The Trainer's two phases, each run in a process of its own: train_phase and export_phase.

components/trainer/module.py's run_fn (what TFX's Trainer calls) hands each phase a
TrainingJob through components/trainer/child_process.py; see module.py for what the
phases produce, how they resume after a kill, and where a warm start comes from.
This module imports TensorFlow and the model layer; module.py and child_process.py import it,
and it imports neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os

import tensorflow as tf

from bertqa.data import windowing
from bertqa.model import distribution, model_spec, serving, training
from bertqa.operations import base_model, pushed_models
from components.bert_qa_transform.tokenizer_artifact import TransformConfig, read_tokenizer_artifact

TRAINING_SUMMARY_FILE = "training_summary.json"


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """What run_fn hands its training and export processes: plain values taken from TFX's FnArgs."""
    train_files: tuple[str, ...]  # the train split's files (globs resolved)
    transform_output: str  # BertQATransform's tokenizer artifact
    serving_model_dir: str
    model_run_dir: str
    train_steps: int | None  # Trainer's train_args.num_steps, when set
    custom_config: dict

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainingJob:
        fields = json.loads(text)
        return cls(**{**fields, "train_files": tuple(fields["train_files"])})


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """What both processes derive alike from the job and the push destination."""
    spec: model_spec.BertQaSpec
    tokenizer: TransformConfig
    batch_size: int
    epochs: float
    num_windows: int  # the windows that train (windowing.count_training_windows)
    split_windows: int  # the train split's windows
    steps: int
    identity: dict
    baseline: pushed_models.PushedModel | None
    cold_start_reason: str | None
    checkpoints: training.CheckpointPolicy
    base: base_model.BaseModel | None = None  # the spec's init_from, checked against the spec


def plan_training(job: TrainingJob) -> TrainingPlan:
    config = job.custom_config
    spec = model_spec.from_json(config["model_spec"])
    batch_size = int(config.get("batch_size") or spec.default_batch_size)
    if config.get("hyperparameters"):  # the Tuner's best trial (module.run_fn)
        spec, batch_size = model_spec.apply_hyperparameters(spec, batch_size, config["hyperparameters"])
    epochs = float(config.get("epochs") or spec.default_training_epochs)
    tokenizer = read_tokenizer_artifact(job.transform_output)
    # The steps cover the windows that train: with answerless_keep below 1, fewer than the split's.
    split_windows, num_windows = windowing.count_training_windows(list(job.train_files), spec.answerless_keep)
    steps = job.train_steps or max(1, math.ceil(num_windows * epochs / batch_size))
    baseline, cold_start_reason = latest_baseline(config)
    identity = pushed_models.model_identity(json.loads(config["model_spec"]), tokenizer.vocab_path)
    base = base_model.for_spec(spec)  # its identity is the spec's own, with the same vocab file
    return TrainingPlan(spec=spec, tokenizer=tokenizer, batch_size=batch_size, epochs=epochs,
                        num_windows=num_windows, split_windows=split_windows, steps=steps, identity=identity,
                        baseline=baseline, cold_start_reason=cold_start_reason,
                        checkpoints=checkpoint_policy(job, config, steps, baseline), base=base)


def train_phase(job: TrainingJob) -> None:
    """Fits the model and leaves it, with what the summary needs, in the resume checkpoint directory."""
    config = job.custom_config
    # Before any other TensorFlow op: a multi-worker strategy sets up the runtime's collective
    # ops, and logical devices exist only if made before the first op. TF_CONFIG (from run_fn's
    # local workers, or a Vertex AI job's) decides the cluster.
    role = distribution.cluster_role()
    strategy = distribution.strategy_for_environment(
        int(config["local_devices"]) if config.get("local_devices") else None)
    chief = role is None or role.is_chief
    plan = plan_training(job)
    spec, batch_size, steps, checkpoints = plan.spec, plan.batch_size, plan.steps, plan.checkpoints
    cold_start_reason = plan.cold_start_reason
    kept = (f" ({plan.split_windows - plan.num_windows} of the split's {plan.split_windows} left out: answerless "
            f"windows beyond the share {spec.answerless_keep:g})" if plan.num_windows < plan.split_windows else "")
    logging.info("%d training windows%s, %.2f epochs, batch %d -> %d steps", plan.num_windows, kept, plan.epochs,
                 batch_size, steps)

    if tf.io.gfile.exists(os.path.join(checkpoints.directory, TRAINED_FILE)):
        # Killed after the training finished and before the export: only the export is left.
        logging.info("training already finished (%s); its weights go to the export", checkpoints.directory)
        return
    if role is not None:
        logging.info("training as %s %d of a cluster of %d workers (%s)", role.task_type, role.task_index,
                     role.num_workers, "chief" if chief else "not the chief: it writes nothing that stays")
    # Seeded before the model exists, so the same data and settings give the same initialisation
    # (of the span head and any random encoder) and dropout masks. Keras's seed, not only
    # TensorFlow's: an initializer without a seed of its own draws one from Python's `random`,
    # so tf.random.set_seed alone gave each process other initial weights.
    training.keras.utils.set_random_seed(training.DEFAULT_SEED)
    with strategy.scope():
        model = training.build_model(spec)
    resume_file = os.path.join(checkpoints.directory, RESUME_FILE)
    # The weights of a resumed training come from its checkpoint (training.train restores it);
    # where they first came from is what the killed execution recorded when it started. Without
    # a checkpoint (killed before its first), the training starts over, warm start included.
    resuming = (tf.train.latest_checkpoint(checkpoints.directory) is not None
                and tf.io.gfile.exists(resume_file))
    if resuming:
        with tf.io.gfile.GFile(resume_file) as f:
            started = json.load(f)
        warm_started_from, cold_start_reason = started["warm_started_from"], started["cold_start_reason"]
        initialised_from = started.get("initialised_from")
    else:
        warm_started_from, initialised_from = None, None
        if plan.baseline is not None:  # on every worker: each sets its copy of the weights alike
            warm_started_from, cold_start_reason = warm_start(model, plan.identity, plan.baseline)
        if warm_started_from is None and plan.base is not None:
            # No pushed model to continue from (or --cold-start): the QA-tuned base, not the encoder alone.
            base_model.initialise(model, plan.base)
            initialised_from = plan.base.describe()
        if chief:
            tf.io.gfile.makedirs(checkpoints.directory)
            with tf.io.gfile.GFile(resume_file, "w") as f:
                json.dump({"warm_started_from": warm_started_from, "cold_start_reason": cold_start_reason,
                           "initialised_from": initialised_from}, f)
    if warm_started_from:
        logging.info("warm start from pushed version %s (model %s)", warm_started_from["version"],
                     warm_started_from["model_id"])
    elif initialised_from:
        logging.info("start from the base %s (%s); %s", initialised_from["path"], initialised_from["kind"],
                     cold_start_reason)
    else:
        logging.info("cold start: %s", cold_start_reason)
    budget_minutes = config.get("train_budget_minutes")
    train_config = training.train_config(spec, batch_size, steps,
                                         time_budget_seconds=60.0 * float(budget_minutes) if budget_minutes else None,
                                         matmul_dtype=config.get("matmul_dtype") or "auto",
                                         xla=bool(config.get("xla")), shuffle_buffer=plan.num_windows,
                                         start_batch=int(config.get("data_start_batch") or 0))
    # TensorBoard logs in the ModelRun artifact, as TFX's own Trainer examples write them.
    history = training.train(model, list(job.train_files), train_config, log_dir=job.model_run_dir,
                             checkpoints=checkpoints, strategy=strategy)
    if not chief:
        return  # the chief writes the summary; its checkpoint holds the weights every worker has
    summary = {"train_windows": plan.num_windows, "split_windows": plan.split_windows,
               "answerless_keep": spec.answerless_keep, "steps": steps, "batch_size": batch_size, "epochs": plan.epochs,
               "learning_rate": train_config.learning_rate, "warmup_fraction": train_config.warmup_fraction,
               "dropout_rate": spec.dropout_rate, "hyperparameters": config.get("hyperparameters") or None,
               "final_loss": float(history.history["loss"][-1]),
               "steps_trained": int(model.optimizer.iterations.numpy()),
               # The batches of the seeded window order this training took: the next piece starts at the end.
               "data_batches": [train_config.start_batch,
                                train_config.start_batch + int(model.optimizer.iterations.numpy())],
               "resumed_from_step": history.resumed_from_step,
               "time_budget_seconds": train_config.time_budget_seconds,
               "training_seconds": round(history.training_seconds, 1),
               "stopped_by_time_budget": history.stopped_by_time_budget,
               "matmul_dtype": history.matmul_dtype, "xla": history.xla, "onednn": onednn_enabled(),
               "workers": role.num_workers if role else 1, "replicas": history.replicas,
               "identity": plan.identity, "warm_started_from": warm_started_from,
               "initialised_from": initialised_from,
               "cold_start_reason": cold_start_reason, "process_ids": {"train": os.getpid()}}
    # Written after train() saved its final checkpoint: with this file there, the weights are final.
    with tf.io.gfile.GFile(os.path.join(checkpoints.directory, TRAINED_FILE), "w") as f:
        json.dump(summary, f)


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs oneDNN's kernels (TF_ENABLE_ONEDNN_OPTS, read at import)."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own test_util.IsMklEnabled reads it here

    return bool(_pywrap_util_port.IsMklEnabled())


def export_phase(job: TrainingJob) -> None:
    """Exports the trained weights as the SavedModel, writes training_summary.json, removes the checkpoints."""
    plan = plan_training(job)
    trained_file = os.path.join(plan.checkpoints.directory, TRAINED_FILE)
    if not tf.io.gfile.exists(trained_file):
        raise RuntimeError(f"the training process left no {trained_file}: the training did not finish")
    with tf.io.gfile.GFile(trained_file) as f:
        summary = json.load(f)
    summary["process_ids"]["export"] = os.getpid()
    role = distribution.cluster_role()  # a cluster task's export inherits its TF_CONFIG
    summary["exported_by"] = f"{role.task_type} {role.task_index}" if role else "the only process"
    model = training.build_model(plan.spec)
    training.restore_weights(model, plan.checkpoints.directory)
    serving.export_saved_model(model, plan.tokenizer.vocab_path, plan.tokenizer.do_lower_case,
                               plan.tokenizer.window, job.serving_model_dir,
                               on_device_lengths=plan.spec.on_device_lengths)
    # At the model artifact's root, where SquadEvaluator, TFLiteExporter and `bertqa lineage` find it.
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(job.serving_model_dir.rstrip("/")),
                                        TRAINING_SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    # The model is whole: nothing is left to resume.
    tf.io.gfile.rmtree(plan.checkpoints.directory)


# How the training is spread over processes and devices, not what it computes (every replica
# trains on its slice of the same global batches): a run killed on 2 workers resumes on 1. The
# Vertex AI Trainer's ai_platform_* keys (its worker pools) are left out of the key alike.
LAYOUT_KEYS = ("train_workers", "local_devices", "chief_export_timeout_minutes")
RESUME_FILE = "resume.json"
TRAINED_FILE = "trained.json"  # the training process's results, for the export process
CHECKPOINTS_SUBDIR = "checkpoints"


def checkpoint_policy(job: TrainingJob, config: dict, steps: int,
                      baseline: pushed_models.PushedModel | None) -> training.CheckpointPolicy:
    """The resume checkpoints of this training: a directory keyed by everything that decides it."""
    key_fields = {"train_files": sorted(job.train_files), "transform_output": job.transform_output,
                  "custom_config": {k: v for k, v in sorted(config.items())
                                    if not k.startswith(("checkpoint_every", "ai_platform_"))
                                  and k not in LAYOUT_KEYS},
                  "steps": steps, "warm_start_version": baseline.version if baseline else None}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    # model_run_dir is <pipeline root>/Trainer/model_run/<execution id>: two levels up is the
    # Trainer's own directory, which every execution of it shares.
    trainer_dir = os.path.dirname(os.path.dirname(job.model_run_dir.rstrip("/")))
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
