"""The exported SavedModel: raw-text answering and an ids -> logits signature, in one graph.

Signatures:
  serving_default: question [batch] string, context [batch] string
                   -> answer [batch] string, score [batch] float32 (start + end logit)
  logits:          input_word_ids, input_mask, input_type_ids [batch, seq] int32
                   -> start_logits, end_logits [batch, seq] float32 (what evaluation uses)
  tflite_logits:   the same function at exactly [1, seq_len], traced under
                   bertqa.model.modeling.on_device_ops() (LayerNorm and GELU in ops XNNPACK runs):
                   what the TFLite export converts, the Task Library's one window per question
  tflite_logits_L: the same at [1, L] for each shorter L of the spec's on_device_lengths: the TFLite
                   file's other signatures, so that an app runs a question at (close to) its length

The tokenizer and the doc-stride windowing run inside the graph (bertqa.data.serving_windows,
the same tensorflow_text tokenizer the training windows came from), so training and
serving cannot skew. Loading needs `import tensorflow_text` to register its ops.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras as keras

from bertqa.data.serving_windows import ServingWindower
from bertqa.data.windowing import WindowConfig
from bertqa.model import model_spec
from bertqa.model.modeling import on_device_ops

# The SavedModel's signature names (above): what evaluation, warm start and the TFLite conversion look up.
SERVING_SIGNATURE = "serving_default"
LOGITS_SIGNATURE = "logits"
TFLITE_LOGITS_SIGNATURE = "tflite_logits"
# The default on-device window lengths (model_spec.ON_DEVICE_WINDOW_LENGTHS: why these).
ON_DEVICE_WINDOW_LENGTHS = model_spec.ON_DEVICE_WINDOW_LENGTHS


def tflite_logits_signature(seq_len: int, model_seq_len: int) -> str:
    """The SavedModel signature holding the on-device function at [1, seq_len]."""
    return TFLITE_LOGITS_SIGNATURE if seq_len == model_seq_len else f"{TFLITE_LOGITS_SIGNATURE}_{seq_len}"

_IDS_SPEC = tf.TensorSpec([None, None], tf.int32)


@dataclasses.dataclass(frozen=True)
class _UntrackedModel:
    """Holds the Keras model where tf.Module does not track it (a plain object, not a Trackable)."""

    model: keras.Model


class QaServingModule(tf.Module):
    def __init__(self, model: keras.Model, windower: ServingWindower, max_answer_length: int = 30):
        super().__init__(name="bert_qa")
        # The SavedModel keeps the model's weights, not the Keras model: saved as a child object, a
        # Keras model has every layer's call traced and stored for Keras to revive it (4 MB of
        # graphs for the 2-layer test model, a third of the export's time, and again at every load),
        # and no reader revives it: evaluation, warm start, the TFLite conversion and the CLI all
        # call the signatures, and warm start matches weights by variable name, which is kept.
        self._keras = _UntrackedModel(model)
        self.model_weights = list(model.weights)
        self.windower = windower
        self._max_answer_length = max_answer_length

    @property
    def model(self) -> keras.Model:
        return self._keras.model

    @tf.function(input_signature=[_IDS_SPEC, _IDS_SPEC, _IDS_SPEC])
    def logits(self, input_word_ids, input_mask, input_type_ids):
        outputs = self.model({"input_word_ids": input_word_ids, "input_mask": input_mask,
                              "input_type_ids": input_type_ids}, training=False)
        return {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}

    @tf.function  # traced at [1, L] for each on-device length, under on_device_ops(), by export_saved_model
    def tflite_logits(self, input_word_ids, input_mask, input_type_ids):
        outputs = self.model({"input_word_ids": input_word_ids, "input_mask": input_mask,
                              "input_type_ids": input_type_ids}, training=False)
        return {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}

    def _answer_one(self, pair):
        question, context = pair[0], pair[1]
        windows = self.windower(question, context)
        logits = self.logits(windows["input_word_ids"], windows["input_mask"], windows["input_type_ids"])
        start, end = logits["start_logits"], logits["end_logits"]  # (windows, seq)
        seq = tf.shape(start)[1]
        # A span may start only on a context token in the window where that token has the most
        # context, and end on a context token at most max_answer_length - 1 tokens later.
        can_start = (windows["token_byte_starts"] >= 0) & (windows["token_is_max_context"] > 0)  # (windows, seq)
        can_end = windows["token_byte_ends"] >= 0  # (windows, seq)
        band = tf.cast(tf.linalg.band_part(tf.ones([seq, seq]), 0, self._max_answer_length - 1), tf.bool)
        allowed = can_start[:, :, tf.newaxis] & can_end[:, tf.newaxis, :] & band[tf.newaxis]  # (windows, seq, seq)
        scores = start[:, :, tf.newaxis] + end[:, tf.newaxis, :]  # (windows, seq, seq)
        scores = tf.reshape(tf.where(allowed, scores, float("-inf")), [-1])
        best = tf.argmax(scores, output_type=tf.int32)
        window, start_token, end_token = best // (seq * seq), (best // seq) % seq, best % seq
        found = tf.math.is_finite(scores[best])
        begin = windows["token_byte_starts"][window, start_token]
        length = windows["token_byte_ends"][window, end_token] - begin
        answer = tf.cond(found, lambda: tf.strings.substr(context, begin, length), lambda: tf.constant(""))
        score = tf.where(found, scores[best], 0.0)
        return answer, score

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def answer(self, question, context):
        answers, scores = tf.map_fn(
            self._answer_one, (question, context),
            fn_output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.float32)))
        return {"answer": answers, "score": scores}


def export_saved_model(model: keras.Model, vocab_path: str, do_lower_case: bool, window: WindowConfig,
                       export_dir: str, max_answer_length: int = 30,
                       on_device_lengths: tuple[int, ...] = ON_DEVICE_WINDOW_LENGTHS) -> None:
    module = QaServingModule(model, ServingWindower(vocab_path, do_lower_case, window), max_answer_length)
    signatures = {SERVING_SIGNATURE: module.answer.get_concrete_function(),
                  LOGITS_SIGNATURE: module.logits.get_concrete_function()}
    lengths = [window.seq_len, *sorted({n for n in on_device_lengths if n < window.seq_len}, reverse=True)]
    for seq_len in lengths:
        one_window = [tf.TensorSpec([1, seq_len], tf.int32, name=name)
                      for name in ("input_word_ids", "input_mask", "input_type_ids")]
        with on_device_ops():
            signatures[tflite_logits_signature(seq_len, window.seq_len)] = (
                module.tflite_logits.get_concrete_function(*one_window))
    tf.saved_model.save(module, export_dir, signatures=signatures)


def load_answerer(saved_model_dir: str):
    """The raw-text signature of an exported model: f(question=[...], context=[...]) -> dict."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the graph uses)

    return tf.saved_model.load(saved_model_dir).signatures[SERVING_SIGNATURE]
