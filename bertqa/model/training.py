"""Fine-tuning: window TFRecords -> length-bucketed batches -> AdamW with warmup and linear decay.

The one idea that matters for speed on CPUs: SQuAD windows average ~170 tokens while
the model accepts 384, so batches are grouped by length and padded only to their
bucket (a multiple of `bucket_width`), never to seq_len. That keeps the number of
distinct batch shapes (and so tf.function traces) at seq_len / bucket_width.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import shutil
import statistics
import tempfile
import time

import tensorflow as tf
import tf_keras as keras

from bertqa.data import windowing
from bertqa.model import checkpoint, distribution, modeling, optimization
from bertqa.model.model_spec import BertQaSpec
from bertqa.model.modeling import INPUT_NAMES, BertEncoder, build_span_model, is_dropout_state

_TOKEN_FEATURES = INPUT_NAMES
_LABEL_FEATURES = ("start_position", "end_position")


DEFAULT_SEED = 42


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int
    train_steps: int
    learning_rate: float
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seq_len: int = 384
    bucket_width: int = 64
    # Windows the shuffle draws from. The Trainer passes the whole training split (a uniform
    # permutation each epoch): the windows come in article order, so a smaller buffer keeps each
    # stretch of training on a few hundred articles and the low-rate tail on the last ones. Full
    # SQuAD's 85,883 serialized windows hold 169 MB (2,066 bytes each on average, measured on
    # BertQATransform's output of squad-v1.1-train.json less 14 articles).
    shuffle_buffer: int = 20000
    seed: int = DEFAULT_SEED
    # Peak memory bound: a batch whose windows x tokens^2 exceeds this is trained as sequential
    # micro-batches with their gradients summed (same update). Attention holds (batch, heads,
    # seq, seq) tensors for the backward pass, so a batch of 32 at 384 tokens held ~9 GB.
    # 24 x 128^2 (micro-batches of 16 windows at 128 tokens, 2 at 384): 80 steps of the default
    # model on the sample peaked at 2.47 GB, against 3.03-3.25 GB with 32 x 128^2, at the same
    # speed; 16 x 128^2 held as little but trained 8-9% slower (benchmarks/trainer_memory.py,
    # benchmarks/RESULTS.md "Where make run's peak is"). None: whole batches.
    attention_budget: int | None = 24 * 128 * 128
    # Wall-clock limit of training in seconds (None: none), counted from the first step's start
    # (graph tracing included) to the last step's end. Training stops before a step that would
    # end past it, and the learning rate follows progress = max(step / train_steps, elapsed /
    # budget), so warmup and decay fit the budget: the rate reaches 0 when the budget ends,
    # not at a step count the budget never reaches. train_steps stays the upper bound.
    time_budget_seconds: float | None = None
    # The dtype of the encoder's dense-layer matmuls in training steps (see
    # bertqa.model.modeling.bfloat16_matmuls): "bfloat16", "float32", or "auto", which is bfloat16 on
    # CPUs with native bfloat16 dot products (AVX512-BF16 or AMX) and float32 elsewhere.
    matmul_dtype: str = "auto"
    # Compile each training step with XLA (the step as tf.function(jit_compile=True), which XLA
    # compiles once per batch shape: the length buckets, a handful). XLA fuses the step's
    # element-wise work (GELU, LayerNorm, the attention's scale, softmax and their gradients,
    # the bfloat16 casts, AdamW), which took about 70% of a step's operator time at 192 tokens
    # against 30% for the matmuls (a tf.profiler trace of the default spec on the Intel Xeon with
    # AMX). On full SQuAD's windows: +22% windows/s once compiled, at 8.4 GB peak against 2.4
    # (benchmarks/RESULTS.md "XLA-compiled training steps"). Batches train whole, without attention_budget's
    # micro-batches: the fastest form measured (XLA-compiled micro-batches gained half as much).
    # One replica only: the optimizer's cross-replica update of a tf.distribute strategy does
    # not run inside XLA here.
    xla: bool = False
    # Where in the seeded window order this training starts, in batches: a later piece of the
    # same training (a `make base-model` call resuming the base) continues the order where the
    # last piece stopped instead of seeing its first batches again.
    start_batch: int = 0
    # Layer-wise learning-rate decay (bertqa.model.optimization): the span head trains at the peak
    # rate, layer i of L at decay^(L - i) times it, the embeddings at decay^(L + 1). None: one rate.
    layer_decay: float | None = None
    # The share of answerless windows that train (bertqa.data.windowing.kept_for_training); 1.0: all.
    answerless_keep: float = 1.0


def train_config(spec: BertQaSpec, batch_size: int, train_steps: int, **overrides) -> TrainConfig:
    """The optimisation settings of a spec for a given batch size and number of steps."""
    return TrainConfig(batch_size=batch_size, train_steps=train_steps, learning_rate=spec.learning_rate,
                       warmup_fraction=spec.warmup_fraction, weight_decay=spec.weight_decay, seq_len=spec.seq_len,
                       layer_decay=spec.layer_decay, answerless_keep=spec.answerless_keep, **overrides)


def build_model(spec: BertQaSpec) -> keras.Model:
    """The span model for a spec, with pretrained encoder weights when the spec has a checkpoint."""
    if spec.hub_handle:
        from bertqa.model import hub_encoder  # tensorflow_hub is needed only by hub specs

        return hub_encoder.build_hub_model(spec)
    if spec.checkpoint_dir:
        config = checkpoint.read_encoder_config(spec.checkpoint_dir, spec.dropout_rate, spec.initializer_range)
    elif spec.random_encoder:
        config = dataclasses.replace(spec.random_encoder, dropout_rate=spec.dropout_rate,
                                     initializer_range=spec.initializer_range)
    else:
        raise ValueError(f"spec {spec.name!r} names no encoder (checkpoint_dir or random_encoder)")
    if spec.seq_len > config.max_position_embeddings:
        raise ValueError(f"spec {spec.name!r}: seq_len {spec.seq_len} exceeds the encoder's "
                         f"{config.max_position_embeddings} position embeddings")
    encoder = BertEncoder(config, name="encoder")
    model = build_span_model(encoder, spec.initializer_range)
    if spec.checkpoint_dir:
        checkpoint.load_encoder_weights(encoder, spec.checkpoint_dir)
    encoder.trainable = spec.trainable
    return model


def warm_start(model: keras.Model, saved_model_dir: str) -> str | None:
    """Initialises `model` with every weight of an exported SavedModel (bertqa.model.serving's).

    Weights are matched by variable name and shape, and only when every one of the
    model's weights has exactly one match is anything copied. Returns None on success,
    else why not (the model is then left as it was, for a cold start).
    """
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the serving graph)

    from bertqa.model.serving import LOGITS_SIGNATURE

    try:
        loaded = tf.saved_model.load(saved_model_dir)  # kept alive: the signature only references its variables
        source = loaded.signatures[LOGITS_SIGNATURE].variables
    except (OSError, KeyError, ValueError, tf.errors.OpError) as error:
        return f"{saved_model_dir} cannot be loaded as an exported model ({type(error).__name__}: {error})"
    by_name: dict[str, list[tf.Variable]] = {}
    for variable in source:
        by_name.setdefault(variable.name, []).append(variable)
    problems, pairs = [], []
    for weight in model.weights:
        if is_dropout_state(weight):  # not a weight: the logits signature never captures it
            continue
        matches = by_name.pop(weight.name, [])
        if len(matches) != 1:
            problems.append(f"{weight.name}: {len(matches)} variables of that name in the baseline")
        elif matches[0].shape != weight.shape:
            problems.append(f"{weight.name}: shape {matches[0].shape} in the baseline, {weight.shape} here")
        else:
            pairs.append((weight, matches[0]))
    problems.extend(f"{name}: in the baseline only" for name in sorted(by_name))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return f"the baseline's weights do not match this model ({shown})"
    for weight, variable in pairs:
        weight.assign(variable)
    return None


def _parse_windows(serialized):
    spec = {name: tf.io.VarLenFeature(tf.int64) for name in _TOKEN_FEATURES}
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in _LABEL_FEATURES})
    parsed = tf.io.parse_single_example(serialized, spec)
    features = {name: tf.cast(tf.sparse.to_dense(parsed[name]), tf.int32) for name in _TOKEN_FEATURES}
    labels = {"start_logits": tf.cast(parsed["start_position"], tf.int32),
              "end_logits": tf.cast(parsed["end_position"], tf.int32)}
    return features, labels


def bucketed_window_dataset(file_pattern: str | list[str], batch_size: int, seq_len: int,
                            bucket_width: int = 64, shuffle_buffer: int = 0, repeat: bool = False,
                            seed: int = 42, answerless_keep: float = 1.0) -> tf.data.Dataset:
    """Batches of windows padded to the next multiple of `bucket_width` of their longest member (of the
    answerless windows, only the share `answerless_keep`)."""
    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else list(file_pattern)
    if not files:
        raise FileNotFoundError(f"no window files match {file_pattern}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if answerless_keep < 1:
        dataset = dataset.filter(lambda serialized: windowing.kept_for_training(serialized, answerless_keep))
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(_parse_windows)

    def bucket_key(features, labels):
        length = tf.shape(features["input_word_ids"], out_type=tf.int64)[0]
        return (length - 1) // bucket_width

    def batch_bucket(key, windows):
        padded_length = tf.minimum((key + 1) * bucket_width, seq_len)
        token_shape = tf.reshape(padded_length, [1])
        return windows.padded_batch(
            batch_size,
            padded_shapes=({name: token_shape for name in _TOKEN_FEATURES},
                           {"start_logits": [], "end_logits": []}))

    dataset = dataset.group_by_window(bucket_key, batch_bucket, window_size=batch_size)
    # Fixed prefetching, autotuning off. tf.data's autotuning thread re-plans with a period that
    # doubles from 10 ms to a minute, and deleting the iterator at the end of model.fit waited for
    # it: short fits returned up to 5 s after their last step, at 10 ms x (2^n - 1) after the
    # iterator's creation (benchmarks/RESULTS.md), a long one would wait up to a minute. Parsing a
    # batch of windows takes milliseconds against a training step's second, so one thread
    # prefetching two batches keeps the trainer fed without tuning.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps` (as BERT).

    With a time budget (`elapsed_seconds`, a variable that TimeBudget advances, and
    `budget_seconds`), progress is the further along of step / total_steps and elapsed /
    budget: the same curve, laid over whichever ends first.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int,
                 elapsed_seconds: tf.Variable | None = None, budget_seconds: float | None = None):
        self.peak, self.warmup_steps, self.total_steps = peak, max(warmup_steps, 1), max(total_steps, 1)
        self.elapsed_seconds, self.budget_seconds = elapsed_seconds, budget_seconds

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.elapsed_seconds is not None:
            # The step the elapsed share of the budget corresponds to.
            by_time = tf.cast(self.elapsed_seconds, tf.float32) / self.budget_seconds * self.total_steps
            step = tf.maximum(step, by_time)
        warmup = self.peak * step / self.warmup_steps
        decay_span = max(self.total_steps - self.warmup_steps, 1)
        decay = self.peak * tf.maximum(0.0, (self.total_steps - step) / decay_span)
        return tf.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        # The variable is not serialisable; the exported SavedModel carries no optimizer anyway.
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "budget_seconds": self.budget_seconds}


def learning_rate_schedule(config: TrainConfig, elapsed_seconds: tf.Variable | None = None) -> WarmupLinearDecay:
    """The schedule of `config`; with config.time_budget_seconds, `elapsed_seconds` must be given."""
    if config.time_budget_seconds and elapsed_seconds is None:
        raise ValueError("a time-budgeted schedule needs the elapsed_seconds variable that TimeBudget advances")
    return WarmupLinearDecay(config.learning_rate, int(config.train_steps * config.warmup_fraction),
                             config.train_steps, elapsed_seconds if config.time_budget_seconds else None,
                             config.time_budget_seconds)


MATMUL_DTYPES = ("auto", "bfloat16", "float32")
# /proc/cpuinfo flags of the x86 instructions that multiply bfloat16 natively; oneDNN uses them
# for bfloat16 matmuls. Elsewhere it emulates bfloat16, which is slower than float32.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo_path) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # not Linux: no evidence of native bfloat16, so float32
        return False
    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)


def resolve_matmul_dtype(matmul_dtype: str, native_bfloat16: bool | None = None) -> str:
    """"bfloat16" or "float32": what a TrainConfig.matmul_dtype means on this machine."""
    if matmul_dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype {matmul_dtype!r} is not one of {', '.join(MATMUL_DTYPES)}")
    if matmul_dtype != "auto":
        return matmul_dtype
    if native_bfloat16 is None:
        native_bfloat16 = cpu_has_native_bfloat16() and not tf.config.list_physical_devices("GPU")
    return "bfloat16" if native_bfloat16 else "float32"


def _step_with_bfloat16_matmuls(train_step, data):
    # Keras traces its train function by calling train_step, so the encoder's dense layers see
    # the context while the step's graph is built (and only then).
    with modeling.bfloat16_matmuls():
        return train_step(data)


def compile_for_training(model: keras.Model, config: TrainConfig, schedule: WarmupLinearDecay | None = None) -> None:
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = optimization.make_optimizer(schedule or learning_rate_schedule(config), config.weight_decay,
                                            config.layer_decay, [v.name for v in model.trainable_variables])
    model.compile(optimizer=optimizer,
                  loss={"start_logits": loss, "end_logits": loss},
                  loss_weights={"start_logits": 0.5, "end_logits": 0.5})
    # The logs' metric values are already the cluster's (Keras's metrics sum their totals and
    # counts over replicas on read); Keras's "auto" would then sum them over the workers too,
    # and two workers reported twice the loss.
    model.distribute_reduction_method = "first"
    if config.attention_budget and not config.xla:
        # For this model instance only: either builder (modeling's or hub_encoder's) returns a
        # plain functional keras.Model, and Keras calls self.train_step when it makes its step.
        model.train_step = functools.partial(micro_batched_train_step, model, config.attention_budget)
    if resolve_matmul_dtype(config.matmul_dtype) == "bfloat16":
        model.train_step = functools.partial(_step_with_bfloat16_matmuls, model.train_step)
    if config.xla:
        # What Keras's model.jit_compile does to the step, for the train step only: evaluation and
        # prediction keep TensorFlow's executor (their batch shapes are not bucketed).
        model.train_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)


def micro_batch_size(batch, seq, attention_budget):
    """Windows per micro-batch: the most whose windows x seq^2 fits the budget, spread evenly."""
    most = tf.clip_by_value(attention_budget // tf.maximum(seq * seq, 1), 1, tf.maximum(batch, 1))
    chunks = (batch + most - 1) // most
    return (batch + chunks - 1) // chunks


def micro_batched_train_step(model: keras.Model, attention_budget: int, data):
    """Keras's train step, with the batch cut into micro-batches that run one after another.

    The loss of each micro-batch is its mean weighted by its share of the batch, so the summed
    gradients are those of the whole batch's mean loss and one optimizer update follows, as
    without micro-batches. Keras's loss metric is updated per micro-batch weighted by its size
    (LossesContainer), so it still reports the batch mean. Dropout draws new masks per call.
    """
    features, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
    ids = features["input_word_ids"]
    batch, seq = tf.shape(ids, out_type=tf.int64)[0], tf.shape(ids, out_type=tf.int64)[1]
    size = micro_batch_size(batch, seq, attention_budget)
    variables = model.trainable_variables

    def one_micro_batch(start, gradients):
        end = tf.minimum(start + size, batch)
        take = lambda tensors: tf.nest.map_structure(lambda t: t[start:end], tensors)  # noqa: E731
        part_features, part_labels = take(features), take(labels)
        with tf.GradientTape() as tape:
            predictions = model(part_features, training=True)
            share = tf.cast(end - start, tf.float32) / tf.cast(batch, tf.float32)
            loss = model.compute_loss(part_features, part_labels, predictions) * share
        # Dense, to be a loop variable: the embedding's gradient comes as IndexedSlices.
        part = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        return end, [total + g for total, g in zip(gradients, part, strict=True)]

    _, gradients = tf.while_loop(
        lambda start, _: start < batch, one_micro_batch,
        (tf.constant(0, tf.int64), [tf.zeros_like(v) for v in variables]),
        # One at a time: two micro-batches in flight would hold both their activations.
        parallel_iterations=1)
    model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
    return {metric.name: metric.result() for metric in model.metrics}


# Re-exported: callers and bertqa.operations.report_data read them from here.
from bertqa.model.training_monitor import (  # noqa: E402, F401
    LEARNING_RATE_TAG,
    LOSS_TAG,
    TENSORBOARD_SUBDIR,
    THROUGHPUT_TAG,
    TrainingMonitor,
)


class TimeBudget(keras.callbacks.Callback):
    """Ends training before a step that would end past `budget_seconds` of training time.

    `elapsed_seconds` (a variable, so that the learning-rate schedule reads it inside the
    step and a resume checkpoint keeps it) holds the training time spent so far, including
    that of a killed run this one resumes. Whether the next step fits is judged by the median
    duration of the last 20 steps: a step that traces a new batch shape (seconds, where a
    step takes a fraction of one) would otherwise end training early.
    """

    clock = staticmethod(time.monotonic)  # a class attribute, so that a test can give it a fake clock

    def __init__(self, budget_seconds: float, elapsed_seconds: tf.Variable, agreement=None):
        super().__init__()
        self.budget_seconds, self.elapsed_seconds = budget_seconds, elapsed_seconds
        # With several workers (a distribution.ClusterAgreement): the slowest worker's clock
        # decides for all, so they read the same learning rate and stop at the same step.
        self.agreement = agreement
        self.stopped = False

    def on_train_begin(self, logs=None):
        self._origin = self.clock() - float(self.elapsed_seconds.numpy())
        self._step_seconds = collections.deque(maxlen=20)

    def on_train_batch_begin(self, batch, logs=None):
        self._step_started = self.clock()
        if self.agreement is None:  # else the value agreed at the last step's end stands
            self.elapsed_seconds.assign(self._step_started - self._origin)

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        self._step_seconds.append(now - self._step_started)
        elapsed = now - self._origin
        next_step_ends = elapsed + statistics.median(self._step_seconds)
        if self.agreement is not None:
            elapsed, next_step_ends = self.agreement.max([elapsed, next_step_ends])
        self.elapsed_seconds.assign(elapsed)
        if next_step_ends > self.budget_seconds:
            self.stopped = True
            self.model.stop_training = True


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """Where and how often training saves what it needs to resume (weights, optimizer state, step).

    `directory` must outlive the process that trains: a run killed mid-training is resumed
    by the next one from the latest checkpoint there. A checkpoint is written every
    `every_steps` steps (when set) and whenever `every_seconds` have passed since the last.
    """

    directory: str
    every_steps: int | None = None
    every_seconds: float = 300.0


class _PeriodicCheckpoint(keras.callbacks.Callback):
    def __init__(self, manager: tf.train.CheckpointManager, policy: CheckpointPolicy, first_step: int,
                 agreement=None):
        super().__init__()
        self.manager, self.policy, self.first_step = manager, policy, first_step
        # Every worker saves (the chief to the policy's directory, the others to scratch), and
        # at the same steps: a save the others skip would leave them out of step.
        self.agreement = agreement

    def on_train_begin(self, logs=None):
        self._last = time.monotonic()

    last_saved_step: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1
        due_by_steps = self.policy.every_steps and step % self.policy.every_steps == 0
        due_by_time = time.monotonic() - self._last >= self.policy.every_seconds
        if self.agreement is not None:
            due_by_time = self.agreement.max([float(due_by_time)])[0] > 0
        if due_by_steps or due_by_time:
            self.manager.save(checkpoint_number=step)
            self._last, self.last_saved_step = time.monotonic(), step


def restore_weights(model: keras.Model, checkpoint_directory: str) -> None:
    """Sets `model`'s weights from the latest checkpoint `train()` saved in checkpoint_directory.

    Only the model is restored (not the optimizer or the time budget); every weight of the
    model must be in the checkpoint.
    """
    latest = tf.train.latest_checkpoint(checkpoint_directory)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_directory}")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()


def train(model: keras.Model, train_files, config: TrainConfig, callbacks=(),
          log_dir: str | None = None, checkpoints: CheckpointPolicy | None = None,
          strategy: tf.distribute.Strategy | None = None) -> keras.callbacks.History:
    """Fits `model` for config.train_steps; with `log_dir`, TensorBoard logs go to log_dir/train.

    With `checkpoints`, training first restores the latest checkpoint in its directory (if
    any) and runs only the steps that remain, on the batches an uninterrupted run would see
    next: the data order is seeded, so skipping the batches already trained on resumes it.
    The History then carries `resumed_from_step` (0 for a fresh start).

    With a `strategy` of several replicas (bertqa.model.distribution), `model` must have been
    built under its scope; config.batch_size is the global batch, and each replica trains on
    its slice of every global batch. Under several workers, only the chief writes the
    TensorBoard logs and the checkpoints in `checkpoints.directory`; every worker restores
    from there, and the others save to a scratch directory (every worker must take part in a
    save). The steps, the time budget's stop and the checkpoints' steps are the same on all.
    """
    strategy = strategy or tf.distribute.get_strategy()
    distributed = distribution.is_distributed(strategy)
    chief = strategy.extended.should_checkpoint
    agreement = distribution.ClusterAgreement(strategy) if distribution.is_multi_worker(strategy) else None
    if distributed:
        distribution.per_replica_batch_size(config.batch_size, strategy.num_replicas_in_sync)  # fails early
        if config.xla:
            raise ValueError(f"XLA-compiled training steps run on one replica, not the {strategy.num_replicas_in_sync} "
                             "of this strategy: train without --xla, or in one process")

    def global_batches(skip: int = 0) -> tf.data.Dataset:
        return bucketed_window_dataset(train_files, config.batch_size, config.seq_len, config.bucket_width,
                                       shuffle_buffer=config.shuffle_buffer, repeat=True, seed=config.seed,
                                       answerless_keep=config.answerless_keep).skip(config.start_batch + skip)

    # "auto" resolved once (it reads /proc/cpuinfo): the step and the History say the same.
    config = dataclasses.replace(config, matmul_dtype=resolve_matmul_dtype(config.matmul_dtype))
    budget = None
    first_step, extra, scratch = 0, [], None
    with strategy.scope():
        if config.time_budget_seconds:
            budget = TimeBudget(config.time_budget_seconds,
                                tf.Variable(0.0, dtype=tf.float64, trainable=False, name="training_seconds"),
                                agreement)
        schedule = learning_rate_schedule(config, budget.elapsed_seconds if budget else None)
        compile_for_training(model, config, schedule)
        if checkpoints is not None:
            # The optimizer's slots exist only after its first update; build them now so that a
            # restore fills them rather than being deferred to variables created later.
            model.optimizer.build(model.trainable_variables)
            # With a time budget, the time spent is state too: a resumed run has only the rest.
            state = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                        **({"training_seconds": budget.elapsed_seconds} if budget else {}))
            if not chief:
                scratch = tempfile.mkdtemp(prefix="bertqa-worker-checkpoints-")
            manager = tf.train.CheckpointManager(state, scratch or checkpoints.directory, max_to_keep=1)
            latest = tf.train.latest_checkpoint(checkpoints.directory)  # the chief's, on every worker
            if latest:
                state.restore(latest).assert_existing_objects_matched()
                first_step = int(model.optimizer.iterations.numpy())
                logging.info("resuming from %s at step %d of %d", latest, first_step, config.train_steps)
            periodic = _PeriodicCheckpoint(manager, checkpoints, first_step, agreement)
            extra.append(periodic)
    if distributed:
        dataset = distribution.distribute_global_batches(strategy, lambda: global_batches(first_step),
                                                         config.batch_size)
    else:
        dataset = global_batches(first_step)
    remaining = config.train_steps - first_step
    logging.info("training for %d steps of batch %d%s", remaining, config.batch_size,
                 f" over {strategy.num_replicas_in_sync} replicas" if distributed else "")
    progress = TrainingMonitor(config.train_steps, config.batch_size, schedule, log_dir if chief else None,
                               first_step=first_step, time_budget_seconds=config.time_budget_seconds,
                               show_bar=None if chief else False)
    # Killed after the last checkpoint of a finished loop (or of a spent time budget), before the
    # export: nothing is left to train. (Keras would run one step before it saw stop_training.)
    out_of_time = budget is not None and float(budget.elapsed_seconds.numpy()) >= config.time_budget_seconds
    if out_of_time:
        budget.stopped = True
    if remaining <= 0 or out_of_time:
        history = keras.callbacks.History()
        history.history = {"loss": [float("nan")]}
    else:
        history = model.fit(dataset, steps_per_epoch=remaining, epochs=1,
                            callbacks=[*([budget] if budget else []), progress, *extra, *callbacks], verbose=0)
    if checkpoints is not None:
        # The final weights, for the export (components/trainer runs it in a process of its own),
        # and for a resume killed between the two: nothing left to train.
        # Decided alike on every worker (all take part in a save): unless the periodic
        # checkpoint has just saved this step, or nothing was trained after the restored one.
        final_step = int(model.optimizer.iterations.numpy())
        if final_step not in (periodic.last_saved_step, first_step if latest else None):
            manager.save(checkpoint_number=final_step)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    history.resumed_from_step = first_step
    history.matmul_dtype = config.matmul_dtype
    history.xla = config.xla
    history.stopped_by_time_budget = bool(budget and budget.stopped)
    history.training_seconds = float(budget.elapsed_seconds.numpy()) if budget else progress.seconds
    history.replicas = strategy.num_replicas_in_sync
    return history
