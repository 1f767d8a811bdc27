"""Dynamic-range export: fully-connected int8 weights get one scale per output channel.

The stand-in is a `logits` signature over a dense layer whose first output channel has
weights 1000 times larger than the others', the shape of the problem in a trained BERT:
with one scale per tensor that channel sets the step and the others round to almost
nothing; with one scale per channel each keeps its precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from bertqa import tflite_export
from bertqa.tflite_export import QuantizationConfig, TfliteExportConfig

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

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name) for name in tflite_export.INPUT_NAMES])
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
    tf.saved_model.save(module, path, signatures={tflite_export.LOGITS_SIGNATURE: module.logits})
    return path


def _convert(path: str, per_channel: bool) -> bytes:
    return tflite_export.convert_saved_model(path, TfliteExportConfig(seq_len=SEQ_LEN, query_len=8),
                                             QuantizationConfig("dynamic", per_channel_dense=per_channel))


def _int8_dense_scales(model: bytes) -> list[int]:
    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    return [len(t.quantization.scale) for t in tflite_export._fully_connected_weights(graph)
            if t.type == schema.TensorType.INT8]


def _max_error(model: bytes, path: str) -> float:
    rng = np.random.default_rng(1)
    inputs = {"input_word_ids": rng.integers(1000, 30000, (4, SEQ_LEN)).astype(np.int32),
              "input_mask": np.ones((4, SEQ_LEN), np.int32), "input_type_ids": np.zeros((4, SEQ_LEN), np.int32)}
    want = tf.saved_model.load(path).signatures[tflite_export.LOGITS_SIGNATURE](
        **{k: tf.constant(v) for k, v in inputs.items()})
    got = tf.lite.Interpreter(model_content=model).get_signature_runner()(**inputs)
    return max(float(np.abs(got[k] - want[k].numpy()).max()) for k in tflite_export.OUTPUT_NAMES)


def test_dynamic_export_scales_dense_weights_per_output_channel(skewed_dir):
    assert _int8_dense_scales(_convert(skewed_dir, per_channel=True)) == [HIDDEN]
    # What TensorFlow's converter does on its own: one scale for the whole tensor.
    assert _int8_dense_scales(_convert(skewed_dir, per_channel=False)) == [1]


def test_per_channel_scales_keep_the_small_channels_that_one_scale_rounds_away(skewed_dir):
    per_channel = _max_error(_convert(skewed_dir, per_channel=True), skewed_dir)
    per_tensor = _max_error(_convert(skewed_dir, per_channel=False), skewed_dir)
    assert per_channel < per_tensor / 10


def test_weights_of_another_model_are_refused(skewed_dir, tmp_path):
    module = _Skewed()
    module.kernel.assign(module.kernel * -1.0)
    other = str(tmp_path / "other")
    tf.saved_model.save(module, other, signatures={tflite_export.LOGITS_SIGNATURE: module.logits})
    config = TfliteExportConfig(seq_len=SEQ_LEN, query_len=8)
    per_tensor = QuantizationConfig("dynamic", per_channel_dense=False)
    dynamic = tflite_export.convert_saved_model(skewed_dir, config, per_tensor)
    float_model = tflite_export.convert_saved_model(other, config, QuantizationConfig.none())
    with pytest.raises(ValueError, match="not a quantization of their float counterpart"):
        tflite_export.per_channel_dense_weights(dynamic, float_model)
