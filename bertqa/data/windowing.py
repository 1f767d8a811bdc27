"""Doc-stride windows: the "window feature" contract between data and model.

A SQuAD context is usually longer than what fits beside the question in one BERT
input, so each (question, context) pair becomes one or more overlapping windows
`[CLS] question [SEP] context-piece [SEP]`, as in BERT's run_squad.py and the
Model Garden's `official/nlp/data/squad_lib.py`. BertQATransform writes these as
tf.Examples for training and evaluation; the evaluator maps predicted token
positions back to the context through `token_char_starts/ends` and keeps only
positions where `token_is_max_context` is 1. `bertqa.data.serving_windows` re-implements
the same rules in TensorFlow ops for the serving signature, and its tests pin the
two to each other.

Differences from the reference, and why:
* Tokens carry character offsets into the context (from `bertqa.data.tokenization`)
  instead of the reference's whitespace-word index maps, so the answer's character
  span is projected straight onto WordPieces (see `answer_token_span`).
* An empty context yields one window `[CLS] question [SEP] [SEP]` instead of none,
  so every question gets a prediction (the "no answer" at [CLS]).
* The max-context score is compared as exact integers (100x the reference's
  `min(left, right) + 0.01 * length`), so exact ties always go to the earlier
  window instead of depending on float rounding.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bertqa.data.raw_example import SquadExample
from bertqa.data.tokenization import TokenizedText, WordPieceTokenizer, byte_to_char_offsets

# Per-token features, in the order of Window's fields; all int64 lists in tf.Examples.
PER_TOKEN_FEATURES = (
    "input_word_ids",
    "input_mask",
    "input_type_ids",
    "token_char_starts",
    "token_char_ends",
    "token_is_max_context",
)
SCALAR_INT_FEATURES = ("unique_id", "window_index", "start_position", "end_position")
_UNIQUE_ID_MASK = (1 << 63) - 1  # keep ids non-negative int64


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    seq_len: int = 384
    query_len: int = 64
    doc_stride: int = 128

    def __post_init__(self):
        if self.query_len < 1 or self.doc_stride < 1:
            raise ValueError(f"query_len and doc_stride must be positive: {self}")
        # The -3 is [CLS] and the two [SEP]s; a window must hold at least one context token.
        if self.seq_len - self.query_len - 3 < 1:
            raise ValueError(f"seq_len must exceed query_len + 3: {self}")


@dataclasses.dataclass(frozen=True)
class Window:
    unique_id: int
    example_id: str
    window_index: int
    input_word_ids: tuple[int, ...]
    input_mask: tuple[int, ...]
    input_type_ids: tuple[int, ...]
    start_position: int
    end_position: int
    token_char_starts: tuple[int, ...]
    token_char_ends: tuple[int, ...]
    token_is_max_context: tuple[int, ...]


@dataclasses.dataclass
class WindowReport:
    questions: int = 0
    windows: int = 0
    windows_per_question: dict[int, int] = dataclasses.field(default_factory=dict)
    answer_outside_all_windows: list[str] = dataclasses.field(default_factory=list)


def window_unique_id(example_id: str, window_index: int) -> int:
    """A 63-bit id that is the same in every run and on every Beam worker.

    A counter (the reference's 1000000000 + n) would depend on how examples were
    split across workers; a hash of the example id and window index does not.
    """
    digest = hashlib.blake2b(f"{example_id}:{window_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _UNIQUE_ID_MASK


def doc_spans(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window's context piece, in context-token units.

    E.g. 10 context tokens, 4 per window, stride 3: (0, 4), (3, 4), (6, 4): the
    third window reaches the end, so there is no fourth. With stride 5 > 4 the step
    is capped at the window length so no token is skipped: (0, 4), (4, 4), (8, 2).
    An empty context still gets one (empty) window: [(0, 0)].
    """
    spans = []
    start = 0
    while True:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def max_context_mask(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """(num_windows, num_tokens) bool: is window w the max-context window of token t.

    A token seen by several windows is scored in each by its *minimum* distance to
    the window's edges (plus 0.01 * window length to prefer longer windows), and
    only the best-scoring window may predict it. E.g. (the reference's example):
      Doc: the man went to the store and bought a gallon of milk
      Span A: the man went to the
      Span B: to the store and bought
      Span C: and bought a gallon of
    "bought" has 4 left / 0 right context in B (min 0) and 1 left / 3 right in C
    (min 1), so C is its max-context window. Scores are 100x the reference's, in
    integers; `argmax` takes the first maximum, like the reference's strict `>`.
    """
    starts = np.array([s for s, _ in spans], dtype=np.int64)[:, None]  # (num_windows, 1)
    lengths = np.array([n for _, n in spans], dtype=np.int64)[:, None]  # (num_windows, 1)
    positions = np.arange(num_tokens, dtype=np.int64)[None, :]  # (1, num_tokens)
    left = positions - starts  # (num_windows, num_tokens)
    right = starts + lengths - 1 - positions  # (num_windows, num_tokens)
    inside = (left >= 0) & (right >= 0)
    score = np.where(inside, 100 * np.minimum(left, right) + lengths, -1)  # (num_windows, num_tokens)
    best = score.argmax(axis=0)  # (num_tokens,)
    return inside & (best[None, :] == np.arange(len(spans))[:, None])


def answer_token_span(
    token_char_starts: np.ndarray, token_char_ends: np.ndarray, answer_start: int, answer_end: int
) -> tuple[int, int] | None:
    """First and last context token overlapping the answer's chars [start, end).

    E.g. context "John Smith (1895-1943)." tokenizes to
      john smith ( 1895 - 1943 ) .   with char spans
      [0,4) [5,10) [11,12) [12,16) [16,17) [17,21) [21,22) [22,23)
    and the answer "1895" at chars [12, 16) overlaps only "1895": (3, 3).
    Unlike the reference, which starts from the whole whitespace word
    "(1895-1943)." and needs `improve_answer_span` to narrow it, the char spans
    pin the answer directly, and a repeated sub-word ("aa" in "aa-aa") cannot be
    matched at the wrong occurrence. None if no token overlaps (an answer made of
    whitespace, or offsets beyond the context).

    A character that the normaliser expands into several pieces (Hangul "그" -> "ᄀ ##ᅳ",
    "…" -> ". . .") gives all but its last piece an empty span [c, c); those pieces
    count as inside the answer when c lies in it, or the label would start mid-character.
    """
    empty_inside = (token_char_starts == token_char_ends) & (token_char_starts >= answer_start)
    overlapping = np.flatnonzero(
        (token_char_starts < answer_end) & ((token_char_ends > answer_start) | empty_inside))
    if overlapping.size == 0:
        return None
    return int(overlapping[0]), int(overlapping[-1])


def improve_answer_span(
    context_ids: Sequence[int], start: int, end: int, answer_ids: Sequence[int]
) -> tuple[int, int]:
    """Tightens [start, end] to the sub-span whose WordPieces equal the answer's.

    The reference's example: context "The leader was John Smith (1895-1943).",
    answer "1895". Projected through whitespace words the span is the word
    "(1895-1943).", i.e. the tokens "( 1895 - 1943 ) ."; the sub-span equal to
    tokenize("1895") = "1895" is the better label. With char-offset projection
    (`answer_token_span`) the span already is "1895", but the rule still matters
    when the annotated chars start or end inside a token whose neighbours match
    the tokenized answer. When no sub-span matches (answer "Japan" inside the
    single token "japanese") the span is kept as is.
    """
    target = tuple(answer_ids)
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if tuple(context_ids[new_start : new_end + 1]) == target:
                return new_start, new_end
    return start, end


@dataclasses.dataclass(frozen=True)
class _AnswerLabel:
    token_start: int  # index into the context's tokens, inclusive
    token_end: int


def _answer_label(
    example: SquadExample, context_tokens: TokenizedText, answer_ids: np.ndarray | None
) -> _AnswerLabel | None:
    """The training label in context-token units, or None (impossible / unlocatable)."""
    if example.is_impossible or not example.answer_texts or answer_ids is None:
        return None
    # Like the reference, training uses the first gold answer.
    char_start = example.answer_starts[0]
    char_end = char_start + len(example.answer_texts[0])
    ids, char_starts, char_ends = context_tokens
    span = answer_token_span(char_starts, char_ends, char_start, char_end)
    if span is None:
        return None
    start, end = improve_answer_span(ids.tolist(), span[0], span[1], answer_ids.tolist())
    return _AnswerLabel(start, end)


def _example_windows(
    example: SquadExample,
    question_ids: np.ndarray,
    context_tokens: TokenizedText,
    label: _AnswerLabel | None,
    tokenizer: WordPieceTokenizer,
    config: WindowConfig,
) -> list[Window]:
    query = question_ids[: config.query_len].tolist()
    context_ids, char_starts, char_ends = (a.tolist() for a in context_tokens)
    num_tokens = len(context_ids)
    spans = doc_spans(num_tokens, config.seq_len - len(query) - 3, config.doc_stride)
    is_max = max_context_mask(spans, num_tokens).astype(np.int64)  # (num_windows, num_tokens)

    prefix_len = len(query) + 2  # [CLS] query [SEP]; also the offset of context token 0
    prefix_ids = [tokenizer.cls_id, *query, tokenizer.sep_id]
    no_offsets = [-1] * prefix_len
    windows = []
    for index, (start, length) in enumerate(spans):
        piece = slice(start, start + length)
        start_position = end_position = 0
        if label is not None and label.token_start >= start and label.token_end < start + length:
            start_position = label.token_start - start + prefix_len
            end_position = label.token_end - start + prefix_len
        windows.append(
            Window(
                unique_id=window_unique_id(example.id, index),
                example_id=example.id,
                window_index=index,
                input_word_ids=(*prefix_ids, *context_ids[piece], tokenizer.sep_id),
                input_mask=(1,) * (prefix_len + length + 1),
                input_type_ids=(0,) * prefix_len + (1,) * (length + 1),
                start_position=start_position,
                end_position=end_position,
                token_char_starts=(*no_offsets, *char_starts[piece], -1),
                token_char_ends=(*no_offsets, *char_ends[piece], -1),
                token_is_max_context=(0,) * prefix_len + tuple(is_max[index, piece].tolist()) + (0,),
            )
        )
    return windows


def make_windows(
    examples: Sequence[SquadExample],
    tokenizer: WordPieceTokenizer,
    config: WindowConfig,
    is_training: bool,
) -> tuple[list[Window], WindowReport]:
    """Windows for a chunk of examples, in example order, and a summary report.

    Training windows carry the first answer's token positions when the window
    fully contains it, else start = end = 0 ([CLS]); evaluation windows carry 0, 0.
    """
    # SQuAD asks ~5 questions per paragraph: tokenize each distinct context once,
    # and everything in one batched tokenizer call.
    context_index = {context: i for i, context in enumerate(dict.fromkeys(e.context for e in examples))}
    contexts = list(context_index)
    answers = [e.answer_texts[0] if e.answer_texts else "" for e in examples] if is_training else []
    tokenized = tokenizer.tokenize_with_byte_offsets(contexts + [e.question for e in examples] + answers)
    context_tokens = [
        (ids, *byte_to_char_offsets(text, byte_starts, byte_ends))
        # contexts come first in `tokenized`
        for text, (ids, byte_starts, byte_ends) in zip(contexts, tokenized, strict=False)
    ]
    question_ids = [ids for ids, _, _ in tokenized[len(contexts) : len(contexts) + len(examples)]]
    answer_ids = [ids for ids, _, _ in tokenized[len(contexts) + len(examples) :]]
    if not is_training:
        answer_ids = [None] * len(examples)

    windows: list[Window] = []
    per_question: collections.Counter[int] = collections.Counter()
    outside: list[str] = []
    for example, q_ids, a_ids in zip(examples, question_ids, answer_ids, strict=True):
        tokens = context_tokens[context_index[example.context]]
        label = _answer_label(example, tokens, a_ids) if is_training else None
        example_windows = _example_windows(example, q_ids, tokens, label, tokenizer, config)
        answer_found = any(w.start_position > 0 for w in example_windows)
        if is_training and not example.is_impossible and not answer_found:
            outside.append(example.id)
        per_question[len(example_windows)] += 1
        windows.extend(example_windows)
    report = WindowReport(
        questions=len(examples),
        windows=len(windows),
        windows_per_question=dict(sorted(per_question.items())),
        answer_outside_all_windows=outside,
    )
    return windows, report


# The share of answerless windows that train is decided in steps of 1/2^20 of unique_id's hash.
_KEEP_RESOLUTION = 1 << 20


def kept_for_training(serialized: tf.Tensor, answerless_keep: float) -> tf.Tensor:
    """Whether a serialized training window trains when only `answerless_keep` of those without an answer do.

    Every window with an answer trains; an answerless one ([CLS] target) trains when its unique_id, a hash,
    falls in that share, so the same windows train in every epoch, on every worker and in a resumed run.
    When a context is a whole document, most windows hold no answer (about 98% of COVID-QA's) and a short
    training sees few answers; the Natural Questions BERT baseline keeps a small random share of the
    answerless windows for this reason (its `include_unknowns`).
    """
    parsed = tf.io.parse_single_example(serialized, {name: tf.io.FixedLenFeature([], tf.int64)
                                                     for name in ("start_position", "unique_id")})
    return tf.logical_or(parsed["start_position"] > 0,
                         parsed["unique_id"] % _KEEP_RESOLUTION < round(answerless_keep * _KEEP_RESOLUTION))


def count_training_windows(files: list[str], answerless_keep: float = 1.0) -> tuple[int, int]:
    """(all windows, those that train) in gzipped TFRecord `files`, in one pass; the same when answerless_keep is 1."""
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if answerless_keep >= 1:
        count = int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())
        return count, count
    counts = dataset.map(lambda serialized: tf.stack([tf.constant(1, tf.int64), tf.cast(
        kept_for_training(serialized, answerless_keep), tf.int64)])).reduce(tf.zeros([2], tf.int64), tf.add)
    split, kept = (int(n) for n in counts.numpy())
    return split, kept


def _int64_feature(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def window_to_tf_example(w: Window) -> tf.train.Example:
    feature = {name: _int64_feature(getattr(w, name)) for name in PER_TOKEN_FEATURES}
    feature.update({name: _int64_feature([getattr(w, name)]) for name in SCALAR_INT_FEATURES})
    example_id = tf.train.BytesList(value=[w.example_id.encode("utf-8")])
    feature["example_id"] = tf.train.Feature(bytes_list=example_id)
    return tf.train.Example(features=tf.train.Features(feature=feature))


def window_from_tf_example(proto: tf.train.Example | bytes) -> Window:
    if isinstance(proto, bytes):
        proto = tf.train.Example.FromString(proto)
    feature = proto.features.feature
    fields = {name: tuple(feature[name].int64_list.value) for name in PER_TOKEN_FEATURES}
    fields.update({name: int(feature[name].int64_list.value[0]) for name in SCALAR_INT_FEATURES})
    fields["example_id"] = feature["example_id"].bytes_list.value[0].decode("utf-8")
    return Window(**fields)


def window_feature_spec() -> dict:
    """tf.io.parse_example spec: per-token lists are ragged (windows are unpadded)."""
    spec: dict = {name: tf.io.VarLenFeature(tf.int64) for name in PER_TOKEN_FEATURES}
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in SCALAR_INT_FEATURES})
    spec["example_id"] = tf.io.FixedLenFeature([], tf.string)
    return spec
