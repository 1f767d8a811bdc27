"""Tests for bertqa.data.tokenization: WordPiece ids and character offsets into the original text."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text

from bertqa.data import tokenization
from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer
from bertqa.model import model_cache

SMALL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "hello", "Hello", "world", "!"]

TRICKY_TEXTS = {
    "accents": "Beyoncé naïve café crème brûlée Zürich Ångström",
    "uppercase": "THE QUICK Brown FOX İstanbul ΣΟΦΙΑ",
    "cjk": "北京大学 is in 北京。東京タワー",
    "emoji": "I ❤️ emoji 😀👍🏽 ok",
    "combining_marks": "e\u0301te\u0301 n\u0303o a\u0308\u0301x",
    "multiple_spaces": "multiple    spaces\t\ttabs\n\nnewlines  \u00a0 nbsp  ",
    "mixed": "Beyoncé's 1st album—“Dangerously in Love” (2003), 北京 😀.",
}


def _fold(text: str) -> str:
    """What BERT's uncased normalizer makes of text: lower-case, NFD, no accents."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


@pytest.fixture(scope="module")
def real_tokenizer() -> WordPieceTokenizer:
    vocab_path = model_cache.default_model_dir() / "vocab.txt"
    return WordPieceTokenizer(TokenizerConfig(str(vocab_path), do_lower_case=True))


def _write_vocab(tmp_path, tokens) -> str:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", sorted(TRICKY_TEXTS))
def test_char_offsets_cut_each_wordpiece_from_the_original_text(real_tokenizer, name):
    text = TRICKY_TEXTS[name]
    ((ids, starts, ends),) = real_tokenizer.tokenize_with_offsets([text])
    assert len(ids) >= 3
    for token_id, start, end in zip(ids.tolist(), starts.tolist(), ends.tolist(), strict=True):
        piece = real_tokenizer.id_to_token(token_id)
        if piece == tokenization.UNK_TOKEN:
            assert text[start:end].strip(), "an [UNK] must still cover some text"
            continue
        assert _fold(text[start:end]) == piece.removeprefix("##"), (piece, text[start:end])


def test_offsets_are_str_indices_not_utf8_bytes(real_tokenizer):
    text = "Beyoncé Knowles 😀 北京"
    ((ids, starts, ends),) = real_tokenizer.tokenize_with_offsets([text])
    pieces = [real_tokenizer.id_to_token(i) for i in ids.tolist()]
    assert pieces == ["beyonce", "knowles", "[UNK]", "北", "京"]
    assert starts.tolist() == [0, 8, 16, 18, 19]
    assert ends.tolist() == [7, 15, 17, 19, 20]


def test_byte_offsets_index_the_original_utf8(real_tokenizer):
    text = "Beyoncé Knowles"
    ((_, starts, ends),) = real_tokenizer.tokenize_with_byte_offsets([text])
    encoded = text.encode("utf-8")
    assert [encoded[s:e].decode() for s, e in zip(starts, ends, strict=True)] == ["Beyoncé", "Knowles"]


def test_tf_text_bert_tokenizer_reports_offsets_into_normalized_text(real_tokenizer):
    # Why this module does not use tf_text.BertTokenizer (tf-text 2.16.1): with
    # lower_case=True its offsets index the case-folded, accent-stripped string, so
    # everything after "é" (2 bytes -> "e", 1 byte) is shifted one byte left.
    text = "Beyoncé Knowles"
    slow = tf_text.BertTokenizer(real_tokenizer.config.vocab_path, lower_case=True)
    _, starts, ends = slow.tokenize_with_offsets(tf.constant([text]))
    knowles = slice(int(starts.flat_values[-1]), int(ends.flat_values[-1]))
    assert text.encode("utf-8")[knowles] == b" Knowle"


def test_characters_that_expand_snap_to_whole_characters(real_tokenizer):
    # "ß" folds to "ss" and "…" to "...": pieces split inside one original
    # character get spans on its boundaries, in order, covering the whole word.
    for text, expected_pieces in [
        ("Straße", ["st", "##ras", "##se"]),
        ("a…", ["a", ".", ".", "."]),
    ]:
        ((ids, starts, ends),) = real_tokenizer.tokenize_with_offsets([text])
        assert [real_tokenizer.id_to_token(i) for i in ids.tolist()] == expected_pieces
        assert np.all(starts <= ends)
        assert np.all(np.diff(starts) >= 0) and np.all(np.diff(ends) >= 0)
        assert starts[0] == 0 and ends[-1] == len(text)


def test_batched_call_equals_one_call_per_text(real_tokenizer, monkeypatch):
    texts = [*TRICKY_TEXTS.values(), "", "   "]
    monkeypatch.setattr(tokenization, "_MAX_BATCH", 3)  # also exercise the chunking
    batched = real_tokenizer.tokenize_with_offsets(texts)
    assert len(batched) == len(texts)
    for text, got in zip(texts, batched, strict=True):
        ((want_ids, want_starts, want_ends),) = real_tokenizer.tokenize_with_offsets([text])
        np.testing.assert_array_equal(got[0], want_ids)
        np.testing.assert_array_equal(got[1], want_starts)
        np.testing.assert_array_equal(got[2], want_ends)
    assert [len(ids) for ids, _, _ in batched[-2:]] == [0, 0]


def test_output_dtypes_and_empty_batch(real_tokenizer):
    ((ids, starts, ends),) = real_tokenizer.tokenize_with_offsets(["hello"])
    assert (ids.dtype, starts.dtype, ends.dtype) == (np.int32, np.int64, np.int64)
    assert real_tokenizer.tokenize_with_offsets([]) == []


def test_greedy_longest_match_wordpieces_with_offsets(tmp_path):
    tokenizer = WordPieceTokenizer(TokenizerConfig(_write_vocab(tmp_path, SMALL_VOCAB)))
    ((ids, starts, ends),) = tokenizer.tokenize_with_offsets(["UNAFFABLE  world!"])
    assert [tokenizer.id_to_token(i) for i in ids.tolist()] == ["un", "##aff", "##able", "world", "!"]
    assert starts.tolist() == [0, 2, 5, 11, 16]
    assert ends.tolist() == [2, 5, 9, 16, 17]


def test_out_of_vocabulary_word_is_one_unk_over_the_word(tmp_path):
    tokenizer = WordPieceTokenizer(TokenizerConfig(_write_vocab(tmp_path, SMALL_VOCAB)))
    ((ids, starts, ends),) = tokenizer.tokenize_with_offsets(["hello zebra"])
    assert ids.tolist() == [tokenizer.vocab.index("hello"), tokenizer.unk_id]
    assert (starts[1], ends[1]) == (6, 11)


def test_do_lower_case_false_keeps_case(tmp_path):
    vocab_path = _write_vocab(tmp_path, SMALL_VOCAB)
    cased = WordPieceTokenizer(TokenizerConfig(vocab_path, do_lower_case=False))
    uncased = WordPieceTokenizer(TokenizerConfig(vocab_path, do_lower_case=True))
    assert cased.tokenize(["Hello"])[0].tolist() == [SMALL_VOCAB.index("Hello")]
    assert uncased.tokenize(["Hello"])[0].tolist() == [SMALL_VOCAB.index("hello")]


def test_special_token_ids_come_from_the_vocab_file(tmp_path):
    tokenizer = WordPieceTokenizer(TokenizerConfig(_write_vocab(tmp_path, SMALL_VOCAB)))
    assert tokenizer.vocab_size == len(SMALL_VOCAB)
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id) == (0, 1, 2, 3)


def test_real_vocab_special_ids(real_tokenizer):
    assert real_tokenizer.vocab_size == 30522
    assert (real_tokenizer.pad_id, real_tokenizer.unk_id, real_tokenizer.cls_id, real_tokenizer.sep_id) == (
        0,
        100,
        101,
        102,
    )


def test_vocab_without_special_tokens_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\[SEP\]"):
        WordPieceTokenizer(TokenizerConfig(_write_vocab(tmp_path, ["[PAD]", "[UNK]", "[CLS]", "hello"])))


@pytest.mark.parametrize("text", ["plain ascii", "né à 😀 北京 e\u0301"])
def test_char_and_byte_offsets_convert_both_ways(text):
    char_offsets = np.arange(len(text) + 1)
    byte_offsets = tokenization.char_to_byte_offsets(text, char_offsets)
    assert [len(text[:i].encode("utf-8")) for i in char_offsets] == byte_offsets.tolist()
    starts, ends = tokenization.byte_to_char_offsets(text, byte_offsets, byte_offsets)
    assert starts.tolist() == ends.tolist() == char_offsets.tolist()
    assert tokenization.char_to_byte_offsets(text, [-1, 0]).tolist() == [-1, 0]


def test_byte_offsets_inside_a_character_widen_to_whole_characters():
    # "né": "é" is bytes [1, 3); a start at byte 2 floors to char 1, an end ceils to char 2.
    starts, ends = tokenization.byte_to_char_offsets("né", np.array([2]), np.array([2]))
    assert (starts.tolist(), ends.tolist()) == ([1], [2])
