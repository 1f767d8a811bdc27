"""The exported SavedModel: the raw-text signature answers with a span of the context."""

import numpy as np
import pytest
import tensorflow as tf

from bertqa import model_spec, serving, training
from bertqa.tflite_export import LOGITS_SIGNATURE
from bertqa.windowing import WindowConfig

CONTEXT = "The Eiffel Tower was completed in 1889 and stands in Paris, the capital of France."


@pytest.fixture(scope="module")
def exported(tmp_path_factory, vocab_path):
    model = training.build_model(model_spec.get("tiny_random", dropout_rate=0.0))
    export_dir = str(tmp_path_factory.mktemp("saved_model"))
    serving.export_saved_model(model, vocab_path, True, WindowConfig(seq_len=64, query_len=16, doc_stride=16),
                               export_dir)
    return model, export_dir


def test_raw_text_signature_returns_a_span_of_each_context(exported):
    _, export_dir = exported
    answer = serving.load_answerer(export_dir)
    contexts = [CONTEXT, CONTEXT * 3]  # the second needs several windows at seq_len 64
    out = answer(question=["When was it completed?", "Where is it?"], context=contexts)
    texts = [t.decode("utf-8") for t in out["answer"].numpy()]
    assert len(texts) == 2
    assert all(text and text in context for text, context in zip(texts, contexts, strict=True))
    assert out["score"].shape == (2,)


def test_logits_signature_equals_the_keras_model(exported):
    model, export_dir = exported
    signature = tf.saved_model.load(export_dir).signatures[LOGITS_SIGNATURE]
    ids = np.array([[101, 2043, 102, 1996, 3001, 102]], np.int32)
    inputs = {"input_word_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": np.zeros_like(ids)}
    expected = model(inputs, training=False)
    got = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), atol=1e-5)
