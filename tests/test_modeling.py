"""The encoder reads BERT-layout checkpoints correctly and masks padding."""

import numpy as np
import pytest
import tensorflow as tf

from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer
from bertqa.model import checkpoint, model_cache, model_spec, training
from bertqa.model.modeling import BertEncoder


def _mean_pooled(encoder, tokenizer, sentences):
    embeddings = []
    for sentence in sentences:
        (ids, _, _), = tokenizer.tokenize_with_offsets([sentence])
        ids = np.concatenate([[tokenizer.cls_id], ids, [tokenizer.sep_id]]).astype(np.int32)[None]
        hidden = encoder(tf.constant(ids), tf.ones_like(ids), tf.zeros_like(ids), training=False)
        vector = tf.reduce_mean(hidden[0], axis=0).numpy()
        embeddings.append(vector / np.linalg.norm(vector))
    return embeddings


def test_minilm_checkpoint_loads_into_an_encoder_that_embeds_meaning():
    # all-MiniLM-L6-v2 was trained so that mean-pooled embeddings of paraphrases are close;
    # a wrongly mapped or transposed weight destroys that.
    checkpoint_dir = str(model_cache.ensure_default_model())
    config = checkpoint.read_encoder_config(checkpoint_dir, dropout_rate=0.0, initializer_range=0.02)
    encoder = BertEncoder(config)
    encoder(tf.ones([1, 4], tf.int32), tf.ones([1, 4], tf.int32), tf.zeros([1, 4], tf.int32))
    checkpoint.load_encoder_weights(encoder, checkpoint_dir)
    tokenizer = WordPieceTokenizer(TokenizerConfig(f"{checkpoint_dir}/vocab.txt"))
    eating, bread, guitar = _mean_pooled(encoder, tokenizer, [
        "A man is eating food.", "A man is eating a piece of bread.", "A woman is playing the guitar."])
    assert eating @ bread > 0.6
    assert eating @ guitar < 0.3


def test_checkpoint_dir_without_files_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(checkpoint.CheckpointError, match="missing model.safetensors, vocab.txt"):
        checkpoint.check_checkpoint_dir(str(tmp_path))


def test_padding_changes_neither_logits_of_real_tokens_nor_allows_answers_in_padding():
    model = training.build_model(model_spec.get("tiny_random", dropout_rate=0.0))
    ids = np.array([[101, 2054, 102, 3000, 3001, 102]], np.int32)
    padded = np.concatenate([ids, np.zeros([1, 4], np.int32)], axis=1)

    def logits(word_ids):
        mask = (word_ids > 0).astype(np.int32)
        types = np.zeros_like(word_ids)
        out = model({"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": types}, training=False)
        return out["start_logits"].numpy(), out["end_logits"].numpy()

    start, end = logits(ids)
    padded_start, padded_end = logits(padded)
    np.testing.assert_allclose(padded_start[:, :6], start, atol=1e-4)
    np.testing.assert_allclose(padded_end[:, :6], end, atol=1e-4)
    assert (padded_start[:, 6:] < -1000).all() and (padded_end[:, 6:] < -1000).all()


def test_on_device_ops_compute_the_same_logits_as_training_ops():
    # The TFLite signature is traced under on_device_ops() (LayerNorm through matrix products,
    # GELU in its tanh form): it must be the trained function, not a different model.
    from bertqa.model import modeling

    checkpoint_dir = str(model_cache.ensure_default_model())
    config = checkpoint.read_encoder_config(checkpoint_dir, dropout_rate=0.0, initializer_range=0.02)
    model = modeling.build_span_model(BertEncoder(config, name="encoder"), 0.02)
    checkpoint.load_encoder_weights(model.get_layer("encoder"), checkpoint_dir)
    rng = np.random.default_rng(0)
    inputs = {"input_word_ids": tf.constant(rng.integers(1000, 5000, (2, 48)), tf.int32),
              "input_mask": tf.constant(np.r_[np.ones((1, 48)), np.c_[np.ones((1, 30)), np.zeros((1, 18))]], tf.int32),
              "input_type_ids": tf.constant(np.c_[np.zeros((2, 16)), np.ones((2, 32))], tf.int32)}
    expected = model(inputs, training=False)
    with modeling.on_device_ops():
        traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            {name: tf.TensorSpec(t.shape, t.dtype) for name, t in inputs.items()})
    on_device = traced(inputs)
    op_types = {op.type for op in traced.graph.get_operations()}
    assert "Rsqrt" not in op_types and "Erf" not in op_types  # the ops XNNPACK lacks are gone
    for name in ("start_logits", "end_logits"):
        np.testing.assert_allclose(on_device[name].numpy(), expected[name].numpy(), atol=2e-3)
    # Outside the block the training graph is unchanged (exact GELU).
    plain = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        {name: tf.TensorSpec(t.shape, t.dtype) for name, t in inputs.items()})
    assert "Erf" in {op.type for op in plain.graph.get_operations()}


def test_dropout_masks_differ_per_step_and_per_layer_keep_the_rate_and_are_off_at_inference():
    from bertqa.model.modeling import Dropout, DropoutSeeds

    tf.random.set_seed(3)
    seeds = DropoutSeeds()
    first, second = Dropout(0.25, seeds, stream=0), Dropout(0.25, seeds, stream=1)
    ones = tf.ones([64, 256])

    @tf.function
    def step():
        seeds.advance()
        return first(ones, training=True), second(ones, training=True)

    a1, b1 = step()
    a2, _ = step()
    for mask in (a1, b1, a2):
        values = np.unique(mask.numpy())
        np.testing.assert_allclose(values, [0.0, 1 / 0.75], rtol=1e-6)  # inverted dropout
        assert float(tf.reduce_mean(tf.cast(mask == 0, tf.float32))) == pytest.approx(0.25, abs=0.01)
    assert not np.array_equal(a1.numpy(), b1.numpy())  # layer to layer
    assert not np.array_equal(a1.numpy(), a2.numpy())  # step to step
    assert np.array_equal(first(ones, training=False).numpy(), ones.numpy())
    assert np.array_equal(first(ones).numpy(), ones.numpy())
