"""Training on more than one device or machine: which tf.distribute strategy, and the data it sees.

The strategy comes from the environment, as TFX's Trainer and Vertex AI hand it over:
  - `TF_CONFIG` naming several tasks (chief and/or workers) -> MultiWorkerMirroredStrategy,
    one process per task, gradients all-reduced over gRPC;
  - otherwise several local GPUs, or `local_devices` logical CPU devices asked for (tests, and
    a way to see the path on a machine with no accelerator) -> MirroredStrategy in one process;
  - otherwise TensorFlow's default strategy: the single-process path, unchanged.

The data: every worker reads the same seeded stream of global batches (length-bucketed, see
bertqa.model.training) and each replica trains on its own slice of every batch. Why not
tf.data's auto-sharding: with length buckets, sharding files or records would give each worker
batches of other lengths and, on a worker that runs dry first, fewer steps, and collective
all-reduces deadlock unless every worker runs the same number of steps. Slicing global batches
keeps the steps equal by construction, and N replicas compute the update one process computes
on the same global batch (tests/test_distributed_training.py: two workers, and MirroredStrategy
over two devices, end with one process's weights). The cost is that every worker parses every
record, milliseconds per batch against a training step's second.

Keras under a strategy scales each replica's loss by 1/replicas and sums the replicas'
gradients, so the update is the one of the global batch's mean loss (tf_keras
LossesContainer and the optimizer's cross-replica apply_gradients).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

TF_CONFIG_ENV = "TF_CONFIG"


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """This process's place in a TF_CONFIG cluster."""
    num_workers: int  # tasks that train: the chief (if any) and the workers
    task_type: str
    task_index: int

    has_chief_task: bool = False

    @property
    def is_chief(self) -> bool:
        """The task that writes what the training leaves (checkpoints, logs, summary, SavedModel).

        TensorFlow's convention: the `chief` task when the cluster has one, else worker 0.
        """
        return self.task_type == "chief" or (self.task_index == 0 and not self.has_chief_task)


def cluster_role(tf_config: str | None = None) -> ClusterRole | None:
    """The role TF_CONFIG (default: the environment's) gives this process, or None for one process.

    A TF_CONFIG naming a single task (as some launchers set for one replica) is one process too.
    """
    text = os.environ.get(TF_CONFIG_ENV) if tf_config is None else tf_config
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{TF_CONFIG_ENV} is not a JSON object with cluster and task ({error}): {text!r}") from None
    trainers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if trainers <= 1:
        return None
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker"):
        # An evaluator or parameter-server task does not train under MultiWorkerMirroredStrategy.
        raise ValueError(f"{TF_CONFIG_ENV} gives this process the task {task_type!r}: the Trainer runs as "
                         "'chief' or 'worker' tasks only (MultiWorkerMirroredStrategy)")
    return ClusterRole(num_workers=trainers, task_type=task_type, task_index=int(task_index),
                       has_chief_task=bool(cluster.get("chief")))


def local_cluster_config(ports: list[int], index: int) -> str:
    """The TF_CONFIG of worker `index` of a cluster of processes on this machine's loopback."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def split_cpu(local_devices: int) -> None:
    """Splits the CPU into `local_devices` logical devices; must run before TensorFlow initialises them.

    (Listing the logical devices would initialise them: the split is tried first.)
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * local_devices)
    except RuntimeError:  # initialised already: fine if by an earlier split of at least as many
        if len(tf.config.list_logical_devices("CPU")) < local_devices:
            raise RuntimeError(f"{local_devices} logical CPU devices were asked for after TensorFlow set up its "
                               "devices: choose the strategy before TensorFlow runs anything") from None


def strategy_for_environment(local_devices: int | None = None) -> tf.distribute.Strategy:
    """The strategy the environment asks for (see the module docstring). Call before any other TF op.

    `local_devices`: with no TF_CONFIG cluster, train on that many local devices (logical CPU
    devices when there are not that many GPUs); None: every local GPU if there are several.
    """
    role = cluster_role()
    if role is not None:
        # Collective ops over gRPC; the strategy reads TF_CONFIG itself. AUTO picks ring
        # all-reduce on CPUs (NCCL on GPUs).
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if local_devices is None:
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if local_devices <= 1:
        return tf.distribute.get_strategy()
    if len(gpus) >= local_devices:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(local_devices)])
    split_cpu(local_devices)
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(local_devices)])


def is_distributed(strategy: tf.distribute.Strategy | None) -> bool:
    return strategy is not None and strategy.num_replicas_in_sync > 1


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    return strategy is not None and strategy.extended._in_multi_worker_mode()  # noqa: SLF001 (as Keras asks it)


def per_replica_batch_size(global_batch_size: int, replicas: int) -> int:
    if global_batch_size % replicas:
        raise ValueError(f"the batch size {global_batch_size} does not divide among {replicas} replicas: "
                         f"choose a multiple of {replicas} (the batch size is the global one, over all replicas)")
    return global_batch_size // replicas


def replica_slices(global_batches: tf.data.Dataset, first_replica: int, local_replicas: int,
                   per_replica: int) -> tf.data.Dataset:
    """Each global batch -> the slices of this input pipeline's replicas, one dataset element each.

    distribute_datasets_from_function hands a pipeline's consecutive elements to its local
    replicas in turn, so the slices of replicas first_replica .. +local_replicas come out in order.
    """
    def slices(features, labels):
        def one(j):
            start = (first_replica + tf.cast(j, tf.int32)) * per_replica
            return tf.nest.map_structure(lambda t: t[start:start + per_replica], (features, labels))
        return tf.data.Dataset.range(local_replicas).map(one)

    return global_batches.flat_map(slices)


def distribute_global_batches(strategy: tf.distribute.Strategy, make_global_batches, global_batch_size: int):
    """A distributed dataset in which every replica trains on its slice of each global batch.

    `make_global_batches()` builds the (seeded, so identical on every worker) dataset of global
    batches; each input pipeline (one per worker) builds it and keeps its replicas' slices.
    """
    replicas = strategy.num_replicas_in_sync
    per_replica = per_replica_batch_size(global_batch_size, replicas)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        dataset = replica_slices(make_global_batches(), context.input_pipeline_id * local, local,
                                 per_replica)
        options = tf.data.Options()
        # Sharding is the slicing above: each pipeline already holds only its replicas' share.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


class ClusterAgreement:
    """Values every worker agrees on: the maximum over workers of each worker's own.

    Training-loop decisions taken outside the step (stop for the time budget, save a checkpoint
    now) must be the same on every worker, or the workers fall out of step and a collective
    waits forever; the learning rate read from the elapsed time must be the same on every
    worker, or their weights drift apart. One all-reduce of a few floats per step.
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        self._strategy = strategy

        @tf.function
        def reduce_max(values):
            def replica_fn(local):
                # tf.distribute reduces by SUM or MEAN only: gather every replica's, take the max.
                gathered = tf.distribute.get_replica_context().all_gather(local[tf.newaxis], axis=0)
                return tf.reduce_max(gathered, axis=0)
            per_replica = strategy.run(replica_fn, args=(values,))
            return strategy.experimental_local_results(per_replica)[0]

        self._reduce_max = reduce_max

    def max(self, values: list[float]) -> list[float]:
        return [float(v) for v in self._reduce_max(tf.constant(values, tf.float64)).numpy()]
