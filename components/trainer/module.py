"""run_fn for TFX's Trainer: fine-tune the spec's encoder with a span head on the window examples.

Artifacts in (through Trainer): examples = BertQATransform's transformed_examples
(window records; `train` split for training), transform_graph = the tokenizer artifact.
Artifacts out: model, a SavedModel (see bertqa.model.serving for its two signatures), at
fn_args.serving_model_dir, and `training_summary.json` at the model artifact's root
(windows, steps, loss, the model's identity, and `warm_started_from`); model_run, TensorBoard
logs under train/ (loss, learning_rate and windows_per_second every 20 steps).

custom_config keys: model_spec (JSON of a BertQaSpec), epochs, batch_size; baseline_serving_dir
(the push destination: the latest model pushed there is the warm start) and cold_start;
checkpoint_every_steps / checkpoint_every_minutes (how often training saves what it needs to
resume); train_budget_minutes (a wall-clock limit: training stops there, with the learning-rate
schedule sized to it; the steps from epochs stay the upper bound); matmul_dtype (auto, bfloat16
or float32: the dtype of the dense layers' matmuls in training steps, see TrainConfig); Trainer's
train_args.num_steps, when set, overrides the step count from epochs; train_workers (N > 1:
train in N processes on this machine's loopback under MultiWorkerMirroredStrategy, see
child_process.run_local_workers) and local_devices (N > 1: MirroredStrategy over N local devices,
logical CPU devices when there are not N GPUs). The batch size is always the global one.
With the Tuner's best_hyperparameters as input (the pipeline's --tune), their values replace
the spec's learning rate, warmup fraction and dropout rate and the batch size; the training
summary records them (`hyperparameters`).

Several machines: under a TF_CONFIG naming several tasks (a Vertex AI job's worker pools set it
in every replica, and each replica runs this executor), run_fn trains as its task under
MultiWorkerMirroredStrategy and only the chief exports (bertqa.model.distribution).

Two processes: run_fn trains in a fresh Python process, then exports in another (see
child_process.py), so neither the pipeline's memory nor the training's adds to the other's
peak. The training process leaves its final weights in the resume checkpoint directory with
`trained.json` (its summary); the export process restores them, writes the SavedModel and the
summary (with both processes' ids), and removes the directory.

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

import logging
import os
import time

import tensorflow as tf

from bertqa.model import distribution
from components.trainer import child_process
from components.trainer.phases import TrainingJob


def run_fn(fn_args) -> None:
    """Trains, then exports, each in a fresh Python process of its own (see child_process.py).

    The local pipeline runs every component in one process, which already holds TFX, Beam and
    the Transform's leftovers (about 1 GiB) when the Trainer starts; training there added its
    own peak on top, and the export then added ~1 GiB to the training's. In fresh processes the
    training's and the export's memory is returned to the system when each ends, and neither
    carries the other's. Between the two, the final checkpoint (the resume checkpoint) carries
    the weights.
    """
    custom_config = dict(fn_args.custom_config or {})
    if getattr(fn_args, "hyperparameters", None):
        # The Tuner's best_hyperparameters (a KerasTuner HyperParameters config): its values
        # replace the spec's and the batch size (phases.plan_training), and, being part of the
        # custom_config, of the resume checkpoints' key too.
        custom_config["hyperparameters"] = dict(fn_args.hyperparameters.get("values") or {})
    job = TrainingJob(
        train_files=tuple(f for pattern in fn_args.train_files for f in tf.io.gfile.glob(pattern)),
        transform_output=fn_args.transform_output, serving_model_dir=fn_args.serving_model_dir,
        model_run_dir=fn_args.model_run_dir, train_steps=fn_args.train_steps or None,
        custom_config=custom_config)
    role = distribution.cluster_role()
    if role is not None:
        # One task of a cluster someone else started (a Vertex AI job's worker pools run this
        # executor in every replica, each with its TF_CONFIG): train as that task, and export
        # on the chief only, whose checkpoint holds the weights every worker trained alike.
        child_process.run_phase("train", job)
        if role.is_chief:
            child_process.run_phase("export", job)
        else:
            # TFX's Trainer executor fails a replica whose run_fn leaves no serving_model_dir;
            # every replica has the same (shared) one, which the chief writes.
            wait_for_chief_export(job.serving_model_dir, role,
                                  float(job.custom_config.get("chief_export_timeout_minutes") or 60.0))
        return
    workers = int(job.custom_config.get("train_workers") or 1)
    if workers > 1:
        child_process.run_local_workers(job, workers)
    else:
        child_process.run_phase("train", job)
    child_process.run_phase("export", job)


def wait_for_chief_export(serving_model_dir: str, role: distribution.ClusterRole, timeout_minutes: float,
                          poll_seconds: float = 1.0) -> None:
    """Returns once the chief's SavedModel is whole in serving_model_dir (its saved_model.pb is
    written last); raises after timeout_minutes."""
    saved_model = os.path.join(serving_model_dir, "saved_model.pb")
    logging.info("%s %d: waiting for the chief's export at %s", role.task_type, role.task_index, serving_model_dir)
    deadline = time.monotonic() + 60.0 * timeout_minutes
    while not tf.io.gfile.exists(saved_model):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{role.task_type} {role.task_index}: the chief's SavedModel did not appear at "
                               f"{serving_model_dir} within {timeout_minutes:g} minutes of this task's training "
                               "ending: the chief's log says why (custom_config chief_export_timeout_minutes "
                               "sets the wait)")
        time.sleep(poll_seconds)

