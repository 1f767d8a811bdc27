"""A BERT encoder with a span head, in tf-keras (Keras 2), small enough to read in one sitting.

Why not tf-models-official's BertEncoder: that package pins its own TensorFlow and
pulls in a long tail (OpenCV, sacrebleu, ...) that fights TFX 1.16's pins; the
encoder itself is a few dozen lines. The layout (names, post-LayerNorm, exact GELU)
follows the original BERT so that checkpoints in the Hugging Face BERT layout load
one-to-one (see checkpoint.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tf_keras as keras


def _keep_autograph_out_of_tf_keras() -> None:
    """Tells AutoGraph not to convert tf-keras's own code, as it never converted Keras 2's.

    AutoGraph's rules skip the packages `tensorflow` and `keras`; Keras 2 lived in `keras` until
    it moved to the `tf_keras` package, which the rules do not name. Every tf.function that calls
    into tf-keras (building a functional model, Keras's train step) then transpiled thousands of
    its functions: building and training the tiny model for 120 steps took 25.6 s with them
    converted and 10.6 s without, with the same final loss (benchmarks/autograph_tf_keras.py).
    tf-keras's code is written for graph mode without AutoGraph (it ran unconverted as `keras`),
    so skipping it changes no graph. The project's own functions, which
    use Python control flow on tensors, are still converted.
    """
    from tensorflow.python.autograph.core import config, config_lib

    if not any(isinstance(rule, config_lib.DoNotConvert) and rule.matches("tf_keras")
               for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (config_lib.DoNotConvert("tf_keras"), *config.CONVERSION_RULES)


_keep_autograph_out_of_tf_keras()

_ON_DEVICE_OPS = contextvars.ContextVar("bertqa_on_device_ops", default=False)
_BFLOAT16_MATMULS = contextvars.ContextVar("bertqa_bfloat16_matmuls", default=False)


@contextlib.contextmanager
def bfloat16_matmuls() -> Iterator[None]:
    """While tracing inside this block, the encoder's dense layers multiply in bfloat16.

    The trainer traces its step inside it on CPUs with native bfloat16 dot products
    (bertqa.model.training.resolve_matmul_dtype): the dense layers' inputs and kernels are cast to
    bfloat16, oneDNN multiplies them with float32 accumulation, and the product is cast back,
    so weights, optimizer state, LayerNorm, softmax, GELU, dropout and the loss stay float32.
    This is what PyTorch's CPU autocast does for linear layers. Why not Keras's
    mixed_bfloat16 policy: it also runs the element-wise ops in bfloat16, which TensorFlow's
    CPU kernels convert element by element, and it gave no gain here (benchmarks/RESULTS.md);
    the matmuls alone gave +18-34% per step (benchmarks/training_levers.py matmuls).
    Evaluation and the exported signatures are traced outside it, in float32.
    """
    token = _BFLOAT16_MATMULS.set(True)
    try:
        yield
    finally:
        _BFLOAT16_MATMULS.reset(token)


@contextlib.contextmanager
def on_device_ops() -> Iterator[None]:
    """While tracing inside this block, LayerNorm and GELU are written with ops XNNPACK runs.

    XNNPACK, the CPU backend of TFLite on phones, runs a model in partitions of the ops it
    supports and hands the rest back to TFLite's reference-style builtin kernels. The
    runtimes this project ships to (TF 2.16's interpreter, the Task Library's older one)
    have no XNNPACK MEAN over the last axis, RSQRT or GELU, so a standard BERT is cut into
    partitions around every LayerNorm and GELU. The same weights traced here give the same
    function (GELU in its tanh form, which differs from the exact one by < 1e-3) in about
    15 partitions, split only by the attention's activation-times-activation matmuls
    (benchmarks/RESULTS.md). Training never runs under it: the trainer exports a TFLite signature traced
    within it (bertqa.model.serving).
    """
    token = _ON_DEVICE_OPS.set(True)
    try:
        yield
    finally:
        _ON_DEVICE_OPS.reset(token)


def gelu(x):
    if _ON_DEVICE_OPS.get():
        # The tanh approximation written as x * sigmoid(2z), which equals x * 0.5 * (1 + tanh z):
        # LOGISTIC is an XNNPACK op, and the converter would fuse the tanh form into a GELU op.
        return x * tf.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
    # Exact (erf) GELU: what BERT checkpoints were trained with.
    return tf.nn.gelu(x, approximate=False)


class LayerNorm(keras.layers.LayerNormalization):
    """Keras' LayerNormalization over the last axis; under on_device_ops() with XNNPACK's ops."""

    def call(self, inputs):
        if not _ON_DEVICE_OPS.get() or list(self.axis) != [inputs.shape.rank - 1]:
            return super().call(inputs)
        width = inputs.shape[-1]
        # Means as matrix products with a constant 1/width column (FULLY_CONNECTED), since
        # XNNPACK's MEAN does not take the last axis of a 3-D tensor in these runtimes.
        average = tf.constant(np.full((width, 1), 1.0 / width), dtype=inputs.dtype)
        centered = inputs - tf.matmul(inputs, average)
        deviation = tf.sqrt(tf.matmul(centered * centered, average) + self.epsilon)
        # The maximum changes nothing (deviation >= sqrt(epsilon)); it keeps the converter from
        # rewriting x / sqrt(v) into x * RSQRT(v), an op XNNPACK lacks here.
        normed = centered / tf.maximum(deviation, 0.5 * math.sqrt(self.epsilon))
        return normed * self.gamma + self.beta


DROPOUT_STEP_NAME = "dropout_step"


def is_dropout_state(variable: tf.Variable) -> bool:
    """True for DropoutSeeds' counter: training state that Keras lists among the weights."""
    return variable.name.split("/")[-1].split(":")[0] == DROPOUT_STEP_NAME


class DropoutSeeds(tf.Module):
    """The per-step seed of an encoder's dropout masks: one counter, advanced once per training call.

    A tf.Module, so that checkpoints (resume continues the masks) and SavedModels reach the
    counter: Keras's SavedModel layer functions are traced in training mode too and capture it.
    Keras therefore lists it among the model's non-trainable weights; warm start, which
    matches weights one to one against a pushed model's, skips it (is_dropout_state).
    """

    def __init__(self):
        super().__init__(name="dropout_seeds")
        with tf.init_scope():  # a variable made eagerly, even when the first call is being traced
            self.base = int(tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64))  # follows tf.random.set_seed
            # Under a tf.distribute strategy each replica keeps its own copy (ON_READ) and
            # advances it in its step, alike on all, with no cross-replica sync (an update of a
            # mirrored variable would sync, which the micro-batch loop cannot hold); a
            # checkpoint keeps the first replica's value.
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name=DROPOUT_STEP_NAME,
                                    synchronization=tf.VariableSynchronization.ON_READ,
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def advance(self):
        return self.step.assign_add(1)


_REPLICA_STREAMS = 1 << 20  # apart from any layer's stream: replica r's masks use streams + r * this


class Dropout(keras.layers.Layer):
    """Inverted dropout with a counter-based (stateless Philox) mask.

    Why not keras.layers.Dropout: it draws from TensorFlow's stateful RandomUniform kernel.
    A first timing suggested that kernel was ~4x slower than the stateless draw on these
    CPUs, but repeated runs of benchmarks/training_levers.py (ops) found the two within noise
    of each other (120-570 ms against 140-220 ms for one (32, 12, 384, 384) tensor), so a
    speed gain from this layer is not shown (benchmarks/RESULTS.md). What it does give: masks
    keyed by (the layer's stream, the step counter of DropoutSeeds), reproducible from the
    seed and continued after a resume, since the counter is in the checkpoint.
    keras.layers.Dropout(force_generator=True) (a tf.random.Generator) orders every dropout
    of a step one after another through its state variable.
    """

    def __init__(self, rate: float, seeds: DropoutSeeds, stream: int, **kwargs):
        super().__init__(**kwargs)
        self.rate, self._seeds, self.stream = rate, seeds, stream

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        # Replicas of a tf.distribute strategy (bertqa.model.distribution) train on different
        # slices of a batch: each draws its own masks. Replica 0's are those of one process.
        replica = tf.distribute.get_replica_context()
        replica_id = (tf.cast(replica.replica_id_in_sync_group, tf.int64) if replica is not None
                      else tf.constant(0, tf.int64))
        seed = tf.stack([tf.constant(self._seeds.base + self.stream, tf.int64) + replica_id * _REPLICA_STREAMS,
                         self._seeds.step.read_value()])
        # 16 random bits per element, two from each 32-bit Philox draw: the dropout of one
        # (32, 12, 384, 384) attention tensor took 100 ms this way against 160 ms with a float
        # per element (benchmarks/training_levers.py ops), six times per step. The rate is kept
        # to 1/65536.
        size = tf.size(inputs)
        bits = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32)
        halves = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:size]
        dropped = round(self.rate * 65536)
        keep = tf.reshape(halves, tf.shape(inputs)) >= tf.constant(dropped, tf.uint16)
        return tf.where(keep, inputs * (1.0 / (1.0 - dropped / 65536)), tf.zeros_like(inputs))


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


class Dense(keras.layers.Dense):
    """keras.layers.Dense, with its matmul in bfloat16 when traced under bfloat16_matmuls()."""

    def call(self, inputs):
        if not _BFLOAT16_MATMULS.get():
            return super().call(inputs)
        flat = tf.reshape(tf.cast(inputs, tf.bfloat16), [-1, inputs.shape[-1]])
        outputs = tf.cast(tf.matmul(flat, tf.cast(self.kernel, tf.bfloat16)), inputs.dtype)
        outputs = tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


def _dense(units: int, config: EncoderConfig, name: str, activation=None) -> keras.layers.Dense:
    return Dense(
        units, activation=activation, name=name,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=config.initializer_range))


def _layer_norm(config: EncoderConfig, name: str) -> keras.layers.LayerNormalization:
    return LayerNorm(epsilon=config.layer_norm_eps, name=name)


class SelfAttention(keras.layers.Layer):
    def __init__(self, config: EncoderConfig, seeds: DropoutSeeds, stream: int, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.query = _dense(config.hidden_size, config, "query")
        self.key = _dense(config.hidden_size, config, "key")
        self.value = _dense(config.hidden_size, config, "value")
        self.output_dense = _dense(config.hidden_size, config, "output_dense")
        self.dropout = Dropout(config.dropout_rate, seeds, stream)

    def _split_heads(self, x):
        # (batch, seq, hidden) -> (batch, heads, seq, head_size). The batch is -1, not tf.shape(x)[0]:
        # a TFLite model traced at batch 1 then still resizes to larger batches for fast evaluation.
        seq = tf.shape(x)[1]
        x = tf.reshape(x, [-1, seq, self.config.num_heads, self.config.head_size])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, hidden, attention_bias, training=None):
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(self.config.head_size))
        scores += attention_bias  # (batch, 1, 1, seq): -10000 on padding, as BERT does
        probs = self.dropout(tf.nn.softmax(scores, axis=-1), training=training)
        context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])  # (batch, seq, heads, head_size)
        context = tf.reshape(context, [-1, tf.shape(hidden)[1], self.config.hidden_size])
        return self.output_dense(context)


class TransformerBlock(keras.layers.Layer):
    """Post-LayerNorm block as in BERT: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: EncoderConfig, seeds: DropoutSeeds, first_stream: int, **kwargs):
        super().__init__(**kwargs)
        self.attention = SelfAttention(config, seeds, first_stream, name="attention")
        self.attention_norm = _layer_norm(config, "attention_norm")
        self.intermediate = _dense(config.intermediate_size, config, "intermediate", activation=gelu)
        self.output_dense = _dense(config.hidden_size, config, "output_dense")
        self.output_norm = _layer_norm(config, "output_norm")
        self.attention_dropout = Dropout(config.dropout_rate, seeds, first_stream + 1)
        self.output_dropout = Dropout(config.dropout_rate, seeds, first_stream + 2)

    STREAMS = 3  # dropout layers per block, each with its own mask stream

    def call(self, hidden, attention_bias, training=None):
        attended = self.attention_dropout(self.attention(hidden, attention_bias, training=training),
                                          training=training)
        hidden = self.attention_norm(hidden + attended)
        transformed = self.output_dropout(self.output_dense(self.intermediate(hidden)), training=training)
        return self.output_norm(hidden + transformed)


class BertEncoder(keras.layers.Layer):
    def __init__(self, config: EncoderConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config

        def embedding(rows: int, name: str) -> keras.layers.Embedding:
            # A fresh initializer per layer: an unseeded Keras initializer instance called twice
            # returns the same values both times.
            init = keras.initializers.TruncatedNormal(stddev=config.initializer_range)
            return keras.layers.Embedding(rows, config.hidden_size, embeddings_initializer=init, name=name)

        self.word_embeddings = embedding(config.vocab_size, "word_embeddings")
        self.position_embeddings = embedding(config.max_position_embeddings, "position_embeddings")
        self.type_embeddings = embedding(config.type_vocab_size, "type_embeddings")
        self.embedding_norm = _layer_norm(config, "embedding_norm")
        self.dropout_seeds = DropoutSeeds()
        self.dropout = Dropout(config.dropout_rate, self.dropout_seeds, stream=0)
        self.blocks = [TransformerBlock(config, self.dropout_seeds, 1 + i * TransformerBlock.STREAMS, name=f"layer_{i}")
                       for i in range(config.num_layers)]

    def call(self, input_word_ids, input_mask, input_type_ids, training=None):
        if training and self.config.dropout_rate:
            self.dropout_seeds.advance()  # new masks for this step (read after it: automatic control deps)
        if _ON_DEVICE_OPS.get():
            # The positions counted from the ids at run time, not a constant range: the converter
            # folds a range at a static length into a constant slice of the table, one per window
            # length of the .tflite (bertqa.on_device.signatures), while a lookup at run time keeps a
            # single table that every signature shares.
            positions = tf.cumsum(tf.cast(tf.greater_equal(input_word_ids, 0), tf.int32), axis=1) - 1  # (batch, seq)
        else:
            positions = tf.range(tf.shape(input_word_ids)[1])[tf.newaxis, :]  # (1, seq)
        hidden = (self.word_embeddings(input_word_ids) + self.position_embeddings(positions)
                  + self.type_embeddings(input_type_ids))  # (batch, seq, hidden)
        hidden = self.dropout(self.embedding_norm(hidden), training=training)
        mask = tf.cast(input_mask, hidden.dtype)[:, tf.newaxis, tf.newaxis, :]  # (batch, 1, 1, seq)
        attention_bias = (1.0 - mask) * -10000.0
        for block in self.blocks:
            hidden = block(hidden, attention_bias, training=training)
        return hidden  # (batch, seq, hidden)


class SpanHead(keras.layers.Layer):
    """Start/end logits per token; padding gets a large negative logit so softmax ignores it."""

    def __init__(self, initializer_range: float, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(
            2, name="span_logits", kernel_initializer=keras.initializers.TruncatedNormal(stddev=initializer_range))

    def call(self, hidden, input_mask):
        logits = self.dense(hidden)  # (batch, seq, 2)
        penalty = (1.0 - tf.cast(input_mask, logits.dtype)) * -10000.0  # (batch, seq)
        start_logits = logits[:, :, 0] + penalty
        end_logits = logits[:, :, 1] + penalty
        return start_logits, end_logits


INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")


def build_span_model(encoder: keras.layers.Layer, initializer_range: float) -> keras.Model:
    """A Keras functional model: the three int32 inputs (batch, seq) -> start/end logits (batch, seq).

    `encoder` is any layer called as encoder(ids, mask, type_ids) returning (batch, seq, hidden):
    the in-project BertEncoder or a TF Hub encoder adapter.
    """
    inputs = {name: keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in INPUT_NAMES}
    hidden = encoder(inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"])
    start_logits, end_logits = SpanHead(initializer_range, name="span_head")(hidden, inputs["input_mask"])
    outputs = {
        "start_logits": keras.layers.Activation("linear", dtype="float32", name="start_logits")(start_logits),
        "end_logits": keras.layers.Activation("linear", dtype="float32", name="end_logits")(end_logits),
    }
    return keras.Model(inputs=inputs, outputs=outputs, name="bert_span_labeler")
