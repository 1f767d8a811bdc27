"""`bertqa.data.windowing`'s doc-stride windows as TensorFlow ops, for the serving signature.

The exported SavedModel takes a raw question and context, so the windowing that
BertQATransform does in Python at training time has to happen inside the graph.
`ServingWindower` re-implements exactly the same rules (question truncation, doc
spans, [CLS]/[SEP] layout, max-context flags) on top of the same tf_text tokenizer
(`bertqa.data.tokenization.build_tf_text_tokenizer`), so training and serving see
identical ids; tests/test_serving_windows.py pins it to `make_windows`.

Offsets are UTF-8 *byte* offsets into the context (the tokenizer's native unit), so
`tf.strings.substr(context, start, end - start)` cuts an answer out inside the graph.
Windows are padded to `seq_len`, the model's fixed input length.
"""

from __future__ import annotations

import tensorflow as tf

from bertqa.data.tokenization import CLS_TOKEN, SEP_TOKEN, build_tf_text_tokenizer, load_vocab
from bertqa.data.windowing import WindowConfig

_NO_OFFSET = -1


def _num_windows(num_tokens: tf.Tensor, max_tokens_for_doc: tf.Tensor, doc_stride: int) -> tf.Tensor:
    """Closed form of `windowing.doc_spans`' loop, as a scalar int32 tensor.

    Every window but the last is full (max_tokens_for_doc long), so starts advance
    by step = min(max_tokens_for_doc, doc_stride) until a window reaches the end:
    e.g. 10 tokens, 4 per window, stride 3: 1 + ceil((10 - 4) / 3) = 3 windows
    starting at 0, 3, 6. At least one window, even for an empty context.
    """
    step = tf.minimum(max_tokens_for_doc, doc_stride)
    overflow = tf.maximum(num_tokens - max_tokens_for_doc, 0)
    return 1 + (overflow + step - 1) // step


def _max_context_table(span_starts: tf.Tensor, span_lengths: tf.Tensor, num_tokens: tf.Tensor) -> tf.Tensor:
    """(num_windows, num_tokens) bool, the graph twin of `windowing.max_context_mask`.

    Score = 100 * min(left, right) + window length (the reference's score x 100).
    tf.argmax does not promise which of equal maxima it returns, so the score is
    made unique by appending the window rank, preferring earlier windows as the
    reference's strict `>` does: key = score * num_windows + (num_windows - 1 - w).
    """
    num_windows = tf.shape(span_starts, out_type=tf.int64)[0]
    starts = span_starts[:, tf.newaxis]  # (num_windows, 1)
    lengths = span_lengths[:, tf.newaxis]  # (num_windows, 1)
    positions = tf.range(num_tokens, dtype=tf.int64)[tf.newaxis, :]  # (1, num_tokens)
    left = positions - starts  # (num_windows, num_tokens)
    right = starts + lengths - 1 - positions  # (num_windows, num_tokens)
    inside = (left >= 0) & (right >= 0)  # (num_windows, num_tokens)
    rank = num_windows - 1 - tf.range(num_windows, dtype=tf.int64)[:, tf.newaxis]  # (num_windows, 1)
    key = (100 * tf.minimum(left, right) + lengths) * num_windows + rank  # (num_windows, num_tokens)
    best = tf.argmax(tf.where(inside, key, -1), axis=0)  # (num_tokens,)
    window_ids = tf.range(num_windows, dtype=tf.int64)[:, tf.newaxis]  # (num_windows, 1)
    return inside & tf.equal(best[tf.newaxis, :], window_ids)


def _gather_or(values: tf.Tensor, indices: tf.Tensor, valid: tf.Tensor, fill) -> tf.Tensor:
    """values[indices] where `valid`, else `fill`; indices may be out of range elsewhere.

    values: (n,) ; indices, valid: (num_windows, seq_len). A dummy element appended
    to `values` keeps the clipped gather legal even when n == 0.
    """
    padded = tf.concat([values, tf.zeros([1], values.dtype)], axis=0)  # (n + 1,)
    safe = tf.clip_by_value(indices, 0, tf.shape(values, out_type=indices.dtype)[0])
    return tf.where(valid, tf.gather(padded, safe), tf.cast(fill, values.dtype))


class ServingWindower(tf.Module):
    """(question, context) scalar strings -> padded windows, all in TF/tf_text ops.

    Tracks vocab.txt as a SavedModel asset (`vocab_file`) so that
    `tf.saved_model.save` ships it with the model (for the TFLite/Task Library
    metadata); the tokenizer itself embeds the vocabulary in its op's model buffer.
    """

    def __init__(self, vocab_path: str, do_lower_case: bool, config: WindowConfig):
        super().__init__(name="serving_windower")
        self.vocab_file = tf.saved_model.Asset(vocab_path)
        vocab = load_vocab(vocab_path)
        self._tokenizer = build_tf_text_tokenizer(vocab, do_lower_case)
        self._cls_id = vocab.index(CLS_TOKEN)
        self._sep_id = vocab.index(SEP_TOKEN)
        self._config = config

    @property
    def config(self) -> WindowConfig:
        return self._config

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string)])
    def __call__(self, question: tf.Tensor, context: tf.Tensor) -> dict[str, tf.Tensor]:
        config = self._config
        ids, byte_starts, byte_ends = self._tokenizer.tokenize_with_offsets(
            tf.stack([question, context])
        )  # each (2, (tokens))
        query = ids[0][: config.query_len]  # (query_len',) int32
        context_ids = ids[1]  # (num_tokens,) int32
        context_starts = byte_starts[1]  # (num_tokens,) int64
        context_ends = byte_ends[1]  # (num_tokens,) int64

        query_length = tf.shape(query, out_type=tf.int64)[0]
        num_tokens = tf.shape(context_ids, out_type=tf.int64)[0]
        max_tokens_for_doc = config.seq_len - query_length - 3  # -3: [CLS] and two [SEP]s
        num_windows = _num_windows(num_tokens, max_tokens_for_doc, config.doc_stride)
        step = tf.minimum(max_tokens_for_doc, config.doc_stride)
        span_starts = tf.range(num_windows, dtype=tf.int64) * step  # (num_windows,)
        span_lengths = tf.minimum(num_tokens - span_starts, max_tokens_for_doc)  # (num_windows,)

        # Window layout by position p: 0 [CLS] | 1..q query | q+1 [SEP] |
        # q+2 .. q+1+len context piece | q+2+len [SEP] | padding.
        positions = tf.range(config.seq_len, dtype=tf.int64)[tf.newaxis, :]  # (1, seq_len)
        piece_index = positions - (query_length + 2)  # (1, seq_len)
        lengths = span_lengths[:, tf.newaxis]  # (num_windows, 1)
        is_query = (positions >= 1) & (positions <= query_length)  # (1, seq_len)
        is_context = (piece_index >= 0) & (piece_index < lengths)  # (num_windows, seq_len)
        is_final_sep = tf.equal(piece_index, lengths)  # (num_windows, seq_len)
        is_real = piece_index <= lengths  # (num_windows, seq_len)
        token_index = span_starts[:, tf.newaxis] + piece_index  # (num_windows, seq_len)

        query_ids = _gather_or(query, positions - 1, is_query, 0)  # (1, seq_len)
        word_ids = _gather_or(context_ids, token_index, is_context, 0)  # (num_windows, seq_len)
        word_ids = tf.where(is_query, query_ids, word_ids)
        is_sep = tf.equal(positions, query_length + 1) | is_final_sep  # (num_windows, seq_len)
        word_ids = tf.where(is_sep, self._sep_id, word_ids)
        word_ids = tf.where(tf.equal(positions, 0), self._cls_id, word_ids)  # (num_windows, seq_len)

        max_context = _max_context_table(span_starts, span_lengths, num_tokens)  # (num_windows, num_tokens)
        is_max_context = tf.gather(
            tf.pad(max_context, [[0, 0], [0, 1]]),  # (num_windows, num_tokens + 1): n == 0 safe
            tf.clip_by_value(token_index, 0, num_tokens),
            batch_dims=1,
        )  # (num_windows, seq_len)

        return {
            "input_word_ids": word_ids,
            "input_mask": tf.cast(is_real, tf.int32),
            "input_type_ids": tf.cast(is_context | is_final_sep, tf.int32),
            "token_byte_starts": _gather_or(context_starts, token_index, is_context, _NO_OFFSET),
            "token_byte_ends": _gather_or(context_ends, token_index, is_context, _NO_OFFSET),
            "token_is_max_context": tf.cast(is_max_context & is_context, tf.int32),
        }
