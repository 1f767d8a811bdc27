"""BERT WordPiece tokenization with character offsets into the original text.

Training (BertQATransform, via `bertqa.data.windowing`) and serving (the SavedModel's
signature, via `bertqa.data.serving_windows`) must cut text into exactly the same
WordPieces, or the fine-tuned model sees different ids at serving time than it was
trained on. Both therefore run the same tensorflow_text op, built by
`build_tf_text_tokenizer`; this module adds the Python-side convenience of batched
calls that return numpy arrays with *character* offsets.

Why `FastBertTokenizer` and not `BertTokenizer` (measured on tensorflow-text 2.16.1):

* `BertTokenizer(lower_case=True)` case-folds, NFD-normalizes and strips accents
  *before* splitting, and its offsets are byte offsets into that normalized string,
  not into the input. "Beyoncé Knowles" gives "knowles" the bytes of " Knowle",
  because "é" (2 bytes) became "e" (1 byte). Every accent, "ß", full-width letter or
  ligature before a token shifts the offsets of all later tokens.
* `FastBertTokenizer(lower_case_nfd_strip_accents=True)` normalizes with an offset
  map and reports byte offsets into the *original* UTF-8 input, snapped to
  character boundaries ("Beyoncé" -> "beyonce" spans all 8 bytes of "Beyoncé";
  "e" + U+0301 spans both code points). It also runs in TFLite.

Both still report UTF-8 *byte* offsets; SQuAD answer_starts are Python `str`
indices, so `WordPieceTokenizer` converts bytes to characters.

One corner remains by design: the normalizer also applies compatibility folding
("ﬁ" -> "fi", "ａ" -> "a", "…" -> "..."), and when one original character expands
into characters that land in different WordPieces, offsets snap to whole original
characters. "Straße" -> "st ##ras ##se" gives "##ras" the span "ra" and "##se" the
span "ße"; a piece wholly inside one character's expansion gets an empty span at
that character ("a…" -> "a . . ." with the first two "." at [1, 1) and the last at
[1, 2)). Spans stay ordered, inside the text, and together cover the word.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SUFFIX_INDICATOR = "##"
# tf_text's default, and the TFLite Task Library's BertTokenizer limit: a longer
# whitespace/punctuation-delimited word becomes a single [UNK].
MAX_BYTES_PER_WORD = 100
_REQUIRED_TOKENS = (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, UNK_TOKEN)
_MAX_BATCH = 1024  # texts per tf_text call

TokenizedText = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(ids int32, char_starts int64, char_ends int64), one entry per WordPiece."""


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    vocab_path: str
    do_lower_case: bool = True


def load_vocab(vocab_path: str) -> list[str]:
    """One token per line; the line number is the id (BERT's vocab.txt layout)."""
    with tf.io.gfile.GFile(vocab_path, "r") as f:
        vocab = [line.rstrip("\r\n") for line in f]
    while vocab and not vocab[-1]:  # a trailing newline is not a token
        vocab.pop()
    missing = [token for token in _REQUIRED_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"vocabulary {vocab_path} lacks the special tokens {missing}")
    return vocab


def build_tf_text_tokenizer(vocab: Sequence[str], do_lower_case: bool) -> tf_text.FastBertTokenizer:
    """The one tokenizer definition shared by training-time and serving-time code.

    Emits int32 ids and int64 byte offsets into the original UTF-8 input.
    """
    return tf_text.FastBertTokenizer(
        vocab=list(vocab),
        suffix_indicator=SUFFIX_INDICATOR,
        max_bytes_per_word=MAX_BYTES_PER_WORD,
        token_out_type=tf.int32,
        unknown_token=UNK_TOKEN,
        lower_case_nfd_strip_accents=do_lower_case,
    )


def byte_to_char_offsets(
    text: str, byte_starts: np.ndarray, byte_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Converts UTF-8 byte offsets into `text` to Python str (code point) offsets.

    E.g. text "né à": the chars start at bytes [0, 1, 3, 4] (and the text ends at
    byte 6), so bytes (3, 6) -> chars (2, 4). A start inside a character is
    floored and an end inside one is ceiled, so a span never loses a character.
    """
    if text.isascii():  # one byte per character: the common SQuAD case, no work
        return byte_starts.astype(np.int64), byte_ends.astype(np.int64)
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    char_bytes = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
    char_byte_starts = np.concatenate([[0], np.cumsum(char_bytes)])  # (num_chars + 1,)
    starts = np.searchsorted(char_byte_starts, byte_starts, side="right") - 1
    ends = np.searchsorted(char_byte_starts, byte_ends, side="left")
    return starts.astype(np.int64), ends.astype(np.int64)


def char_to_byte_offsets(text: str, char_offsets: Sequence[int]) -> np.ndarray:
    """The inverse of `byte_to_char_offsets` for offsets on character boundaries.

    Negative offsets (the -1 of non-context tokens) are passed through.
    """
    offsets = np.asarray(char_offsets, dtype=np.int64)
    if text.isascii():
        return offsets
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    char_bytes = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
    char_byte_starts = np.concatenate([[0], np.cumsum(char_bytes)])  # (num_chars + 1,)
    return np.where(offsets < 0, offsets, char_byte_starts[np.maximum(offsets, 0)])


class WordPieceTokenizer:
    """Batched BERT WordPiece tokenization returning numpy ids and char offsets."""

    def __init__(self, config: TokenizerConfig):
        self._config = config
        self._vocab = load_vocab(config.vocab_path)
        self._token_to_id = {token: i for i, token in enumerate(self._vocab)}
        self._tf_tokenizer = build_tf_text_tokenizer(self._vocab, config.do_lower_case)
        self._tokenize_fn = self._make_tokenize_fn()

    @property
    def config(self) -> TokenizerConfig:
        return self._config

    @property
    def vocab(self) -> list[str]:
        return list(self._vocab)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def cls_id(self) -> int:
        return self._token_to_id[CLS_TOKEN]

    @property
    def sep_id(self) -> int:
        return self._token_to_id[SEP_TOKEN]

    @property
    def pad_id(self) -> int:
        return self._token_to_id[PAD_TOKEN]

    @property
    def unk_id(self) -> int:
        return self._token_to_id[UNK_TOKEN]

    def id_to_token(self, token_id: int) -> str:
        return self._vocab[token_id]

    def _make_tokenize_fn(self):
        tokenizer = self._tf_tokenizer

        # One traced graph per tokenizer: eager ragged ops cost ~10x more per call.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(texts):  # texts: (batch,)
            ids, starts, ends = tokenizer.tokenize_with_offsets(texts)  # (batch, (tokens))
            return ids.flat_values, starts.flat_values, ends.flat_values, ids.row_splits

        return tokenize

    def tokenize_with_byte_offsets(self, texts: Sequence[str]) -> list[TokenizedText]:
        """Like `tokenize_with_offsets`, but offsets are UTF-8 byte offsets."""
        result: list[TokenizedText] = []
        # Bounded batches keep one call's ragged tensors small whatever the caller passes.
        for first in range(0, len(texts), _MAX_BATCH):
            encoded = [text.encode("utf-8") for text in texts[first : first + _MAX_BATCH]]
            ids, starts, ends, splits = (t.numpy() for t in self._tokenize_fn(tf.constant(encoded)))
            result.extend(
                (ids[lo:hi], starts[lo:hi], ends[lo:hi])
                for lo, hi in zip(splits[:-1].tolist(), splits[1:].tolist(), strict=True)
            )
        return result

    def tokenize_with_offsets(self, texts: Sequence[str]) -> list[TokenizedText]:
        """Tokenizes a batch; offsets are str indices into each original text.

        Returns, per text, (ids int32, char_starts int64, char_ends int64) where
        `text[char_starts[i]:char_ends[i]]` is the text WordPiece i came from
        (end exclusive).
        """
        result = []
        tokenized = self.tokenize_with_byte_offsets(texts)
        for text, (ids, byte_starts, byte_ends) in zip(texts, tokenized, strict=True):
            char_starts, char_ends = byte_to_char_offsets(text, byte_starts, byte_ends)
            result.append((ids, char_starts, char_ends))
        return result

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids only, one int32 array per text."""
        return [ids for ids, _, _ in self.tokenize_with_byte_offsets(texts)]


@functools.lru_cache(maxsize=8)
def cached_tokenizer(config: TokenizerConfig) -> WordPieceTokenizer:
    """Shares one tokenizer per config within a process (e.g. per Beam worker)."""
    return WordPieceTokenizer(config)
