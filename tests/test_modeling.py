"""The encoder reads BERT-layout checkpoints correctly and masks padding."""

import numpy as np
import pytest
import tensorflow as tf

from bertqa import checkpoint, model_cache, model_spec, training
from bertqa.modeling import BertEncoder
from bertqa.tokenization import TokenizerConfig, WordPieceTokenizer


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
