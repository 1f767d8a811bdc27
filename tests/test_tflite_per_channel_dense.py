"""Dynamic-range export: fully-connected int8 weights get the precision of one scale per output channel.

The stand-in is a `logits` signature over a dense layer whose first output channel has
weights 1000 times larger than the others', the shape of the problem in a trained BERT:
with one scale per tensor that channel sets the step and the others round to almost
nothing; with one scale per channel each keeps its precision. The file carries that as
per-tensor int8 codes of row-normalised weights and a float rescale after the op, which
every TFLite runtime (the Task Library's included) reads the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from bertqa.model import serving
from bertqa.on_device import conversion, per_channel, task_metadata, tflite_export
from bertqa.on_device.conversion import QuantizationConfig, TfliteExportConfig

SEQ_LEN = 32
HIDDEN = 64


class _Skewed(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.embedding = tf.Variable(rng.normal(size=(30522, HIDDEN)).astype(np.float32))
        kernel = rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32)
        kernel[:, 0] *= 1000.0  # one output channel far larger than the rest
        self.kernel = tf.Variable(kernel)
        self.head = tf.Variable(rng.normal(size=(HIDDEN, 2)).astype(np.float32) / HIDDEN)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name) for name in conversion.INPUT_NAMES])
    def logits(self, input_word_ids, input_mask, input_type_ids):
        hidden = tf.gather(self.embedding, input_word_ids)  # (batch, seq, hidden)
        hidden = tf.reshape(tf.matmul(tf.reshape(hidden, [-1, HIDDEN]), self.kernel), [-1, SEQ_LEN, HIDDEN])
        hidden = tf.concat([hidden[..., :1] * 1e-3, hidden[..., 1:]], axis=-1)  # the large channel rescaled
        out = tf.einsum("bsh,hk->bsk", hidden, self.head)
        return {"start_logits": out[..., 0], "end_logits": out[..., 1]}


@pytest.fixture(scope="module")
def skewed_dir(tmp_path_factory) -> str:
    module = _Skewed()
    path = str(tmp_path_factory.mktemp("skewed"))
    tf.saved_model.save(module, path, signatures={serving.LOGITS_SIGNATURE: module.logits})
    return path


def _convert(path: str, per_channel: bool) -> bytes:
    return conversion.convert_saved_model(path, TfliteExportConfig(seq_len=SEQ_LEN, query_len=8),
                                          QuantizationConfig("dynamic", per_channel_dense=per_channel))


def _int8_dense_weights(model: bytes) -> list:
    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    return [(t, graph) for t in per_channel._fully_connected_weights(graph, 0) if t.type == schema.TensorType.INT8]


def _rescale_after_each_dense(model: bytes) -> list[np.ndarray]:
    """For every FULLY_CONNECTED op, the constant its output is multiplied by next (None without a MUL)."""
    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    ops = graph.subgraphs[0].operators
    scales = []
    for i, op in enumerate(ops):
        if op in per_channel._fully_connected_ops(graph, 0):
            following = ops[i + 1] if i + 1 < len(ops) else None
            is_mul = following is not None and per_channel._builtin_code(graph, following) == \
                schema.BuiltinOperator.MUL and following.inputs[0] == op.outputs[0]
            if is_mul:
                constant = graph.subgraphs[0].tensors[following.inputs[1]]
                scales.append(np.frombuffer(bytes(graph.buffers[constant.buffer].data), np.float32))
            else:
                scales.append(None)
    return scales


def _max_error(model: bytes, path: str) -> float:
    rng = np.random.default_rng(1)
    inputs = {"input_word_ids": rng.integers(1000, 30000, (4, SEQ_LEN)).astype(np.int32),
              "input_mask": np.ones((4, SEQ_LEN), np.int32), "input_type_ids": np.zeros((4, SEQ_LEN), np.int32)}
    want = tf.saved_model.load(path).signatures[serving.LOGITS_SIGNATURE](
        **{k: tf.constant(v) for k, v in inputs.items()})
    got = tf.lite.Interpreter(model_content=model).get_signature_runner()(**inputs)
    return max(float(np.abs(got[k] - want[k].numpy()).max()) for k in conversion.OUTPUT_NAMES)


def test_dynamic_export_gives_every_dense_row_the_full_int8_range_and_rescales_it(skewed_dir):
    model = _convert(skewed_dir, per_channel=True)
    ((weights, graph),) = _int8_dense_weights(model)
    assert len(weights.quantization.scale) == 1  # per tensor: what every runtime reads
    codes = np.frombuffer(bytes(graph.buffers[weights.buffer].data), np.int8).reshape(list(weights.shape))
    assert (np.abs(codes.astype(int)).max(axis=1) == 127).all()  # each output channel uses the whole range
    rescales = _rescale_after_each_dense(model)  # the int8 layer's, and None for the float head (too small)
    assert [r is None for r in rescales] == [False, True]
    rescale = rescales[0]
    assert rescale.shape == (HIDDEN,)
    assert rescale.max() / rescale.min() > 100  # the large channel keeps its own scale
    # What TensorFlow's converter does on its own: one scale for the whole tensor, no rescale.
    ((weights, graph),) = _int8_dense_weights(_convert(skewed_dir, per_channel=False))
    codes = np.frombuffer(bytes(graph.buffers[weights.buffer].data), np.int8).reshape(list(weights.shape))
    assert (np.abs(codes.astype(int)).max(axis=1) < 127).sum() == HIDDEN - 1
    assert _rescale_after_each_dense(_convert(skewed_dir, per_channel=False)) == [None, None]


def test_the_rescaled_model_computes_the_same_on_tflite_reference_kernels(skewed_dir):
    model = _convert(skewed_dir, per_channel=True)
    inputs = {"input_word_ids": np.arange(2 * SEQ_LEN, dtype=np.int32).reshape(2, SEQ_LEN) + 1000,
              "input_mask": np.ones((2, SEQ_LEN), np.int32), "input_type_ids": np.zeros((2, SEQ_LEN), np.int32)}
    outputs = [tf.lite.Interpreter(model_content=model, experimental_op_resolver_type=resolver)
               .get_signature_runner()(**inputs)
               for resolver in (tf.lite.experimental.OpResolverType.AUTO,
                                tf.lite.experimental.OpResolverType.BUILTIN_REF)]
    for name in conversion.OUTPUT_NAMES:
        np.testing.assert_allclose(outputs[0][name], outputs[1][name], rtol=1e-3, atol=1e-3)


def test_per_channel_scales_keep_the_small_channels_that_one_scale_rounds_away(skewed_dir):
    per_channel = _max_error(_convert(skewed_dir, per_channel=True), skewed_dir)
    per_tensor = _max_error(_convert(skewed_dir, per_channel=False), skewed_dir)
    assert per_channel < per_tensor / 10


def test_weights_of_another_model_are_refused(skewed_dir, tmp_path):
    module = _Skewed()
    module.kernel.assign(module.kernel * -1.0)
    other = str(tmp_path / "other")
    tf.saved_model.save(module, other, signatures={serving.LOGITS_SIGNATURE: module.logits})
    config = TfliteExportConfig(seq_len=SEQ_LEN, query_len=8)
    per_tensor = QuantizationConfig("dynamic", per_channel_dense=False)
    dynamic = conversion.convert_saved_model(skewed_dir, config, per_tensor)
    float_model = conversion.convert_saved_model(other, config, QuantizationConfig.none())
    with pytest.raises(ValueError, match="not a quantization of their float counterpart"):
        per_channel.per_channel_dense_weights(dynamic, float_model)


# --- The Task Library check: a file its runtime reads otherwise is caught ------------------------------


class _Answering(tf.Module):
    """A [batch, 384] model whose dense layer has a skewed channel and which answers "denver" clearly.

    The +20 on the "denver" token gives the Task Library a span to answer with; the rest of
    each logit comes through the int8 dense layer, so a runtime that reads its weights
    otherwise answers with other logits.
    """

    def __init__(self, denver_id: int, vocab_size: int):
        super().__init__()
        rng = np.random.default_rng(3)
        self.denver_id = denver_id
        self.embedding = tf.Variable(rng.normal(size=(vocab_size, HIDDEN)).astype(np.float32))
        kernel = rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32)
        kernel[:, 0] *= 1000.0
        self.kernel = tf.Variable(kernel)
        # Large enough that the dense layer moves each logit by several units.
        self.head = tf.Variable(rng.normal(size=(HIDDEN, 2)).astype(np.float32) / 4.0)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name) for name in conversion.INPUT_NAMES])
    def logits(self, input_word_ids, input_mask, input_type_ids):
        hidden = tf.gather(self.embedding, input_word_ids)
        seq = tf.shape(input_word_ids)[1]
        hidden = tf.reshape(tf.matmul(tf.reshape(hidden, [-1, HIDDEN]), self.kernel), [-1, seq, HIDDEN])
        hidden = tf.concat([hidden[..., :1] * 1e-3, hidden[..., 1:]], axis=-1)
        out = tf.einsum("bsh,hk->bsk", hidden, self.head)
        bonus = 20.0 * tf.cast(tf.equal(input_word_ids, self.denver_id), tf.float32)
        return {"start_logits": out[..., 0] + bonus, "end_logits": out[..., 1] + bonus}


def _per_channel_parameters(per_tensor_model: bytes, float_model: bytes) -> bytes:
    """Per-channel scales as quantization parameters: TF's interpreter runs them, the Task Library misreads them."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(per_tensor_model))
    reference = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_model))
    for weights, float_weights in zip(per_channel._fully_connected_weights(model, 0),
                                      per_channel._fully_connected_weights(reference, 0), strict=True):
        if weights.type != schema.TensorType.INT8:
            continue
        values = np.frombuffer(bytes(reference.buffers[float_weights.buffer].data), np.float32)
        values = values.reshape(list(float_weights.shape))
        scales = np.abs(values).max(axis=1) / 127.0
        codes = np.clip(np.round(values / scales[:, None]), -127, 127).astype(np.int8)
        model.buffers[weights.buffer].data = np.frombuffer(codes.tobytes(), np.uint8)
        weights.quantization.scale = scales.astype(np.float32)
        weights.quantization.zeroPoint = np.zeros(len(scales), np.int64)
        weights.quantization.quantizedDimension = 0
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_the_task_library_check_refuses_a_file_its_runtime_reads_otherwise(tmp_path):
    from bertqa.model import model_spec

    vocab_path = model_spec.get("tiny_random").resolved_vocab_path()
    with open(vocab_path, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    module = _Answering(vocab.index("denver"), len(vocab))
    saved = str(tmp_path / "answering")
    tf.saved_model.save(module, saved, signatures={serving.LOGITS_SIGNATURE: module.logits})
    config = TfliteExportConfig()  # the Task Library's [1, 384]
    float_model = conversion.convert_saved_model(saved, config, QuantizationConfig.none())
    per_tensor = conversion.convert_saved_model(saved, config,
                                                QuantizationConfig("dynamic", per_channel_dense=False))

    def problems(model: bytes, name: str) -> list[str]:
        scratch = tmp_path / name
        scratch.mkdir()
        return tflite_export._task_library_run_problems(
            task_metadata.add_task_library_metadata(model, vocab_path), str(scratch), vocab_path, config)

    assert problems(per_channel.per_channel_dense_weights(per_tensor, float_model), "rescaled") == []
    assert problems(float_model, "float") == []
    (problem,) = problems(_per_channel_parameters(per_tensor, float_model), "misread")
    assert "runs the model otherwise than TensorFlow Lite's interpreter" in problem
