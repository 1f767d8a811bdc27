"""The exported SavedModel: the raw-text signature answers with a span of the context."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from bertqa.data.windowing import WindowConfig
from bertqa.model import model_spec, serving, training
from bertqa.model.modeling import is_dropout_state
from bertqa.model.serving import LOGITS_SIGNATURE

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


def test_the_saved_model_keeps_the_weights_by_name_and_no_keras_objects(exported):
    """No reader revives the Keras model, and saving its layers took a third of the export's time.

    Every weight stays, under its variable name (what warm start matches on), and the logits
    signature reads each one (all but the dropout counter, no weight)."""
    model, export_dir = exported
    proto = saved_model_pb2.SavedModel()
    with open(f"{export_dir}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    kinds = {node.user_object.identifier for node in proto.meta_graphs[0].object_graph_def.nodes
             if node.WhichOneof("kind") == "user_object"}
    assert not [kind for kind in kinds if "keras" in kind], kinds
    loaded = tf.saved_model.load(export_dir)  # kept alive: the signature only references its variables
    read = loaded.signatures[LOGITS_SIGNATURE].variables
    assert sorted(v.name for v in read) == sorted(w.name for w in model.weights if not is_dropout_state(w))


def test_a_model_trained_with_dropout_exports_and_its_dropout_counter_is_no_weight_to_warm_start(
        tmp_path, vocab_path):
    """The dropout counter is a variable of the model that the logits signature never reads."""
    model = training.build_model(model_spec.get("tiny_random", dropout_rate=0.1))
    config = training.TrainConfig(batch_size=2, train_steps=1, learning_rate=1e-3)
    training.compile_for_training(model, config)
    ids = tf.constant([[101, 2054, 102, 1996, 102, 0]] * 2)
    labels = {"start_logits": tf.constant([3, 3]), "end_logits": tf.constant([3, 3])}
    model.train_on_batch({"input_word_ids": ids, "input_mask": tf.cast(ids > 0, tf.int32),
                          "input_type_ids": tf.zeros_like(ids)}, labels)
    export_dir = str(tmp_path / "saved_model")
    serving.export_saved_model(model, vocab_path, True, WindowConfig(seq_len=64, query_len=16, doc_stride=16),
                               export_dir)
    fresh = training.build_model(model_spec.get("tiny_random", dropout_rate=0.1))
    assert training.warm_start(fresh, export_dir) is None
    for mine, theirs in zip(fresh.trainable_weights, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
