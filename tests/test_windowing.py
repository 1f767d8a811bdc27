"""Tests for bertqa.data.windowing: doc-stride windows, labels, max-context flags, tf.Example codec."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from bertqa.data.raw_example import SquadExample
from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer
from bertqa.data.windowing import (
    Window,
    WindowConfig,
    answer_token_span,
    doc_spans,
    improve_answer_span,
    make_windows,
    max_context_mask,
    window_feature_spec,
    window_from_tf_example,
    window_to_tf_example,
    window_unique_id,
)
from bertqa.model import model_cache

WORDS = [f"w{i}" for i in range(60)]
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]",
    "the", "leader", "was", "john", "smith", "when", "born", "(", ")", "-", ".", "?",
    "1895", "1943", "japan", "japanese", "electronics", "is", "big",
    *WORDS,
]  # fmt: skip
CLS, SEP = 2, 3


def _id(token: str) -> int:
    return VOCAB.index(token)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> WordPieceTokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return WordPieceTokenizer(TokenizerConfig(str(path)))


def _example(context, question="when was john smith born ?", answer=None, answer_start=None, **kwargs):
    if answer is not None and answer_start is None:
        answer_start = context.index(answer)
    answers = () if answer is None else (answer,)
    starts = () if answer is None else (answer_start,)
    return SquadExample(
        id=kwargs.pop("id", "q0"), title="t", context=context, question=question,
        answer_texts=answers, answer_starts=starts, **kwargs,
    )  # fmt: skip


def _words(first: int, last: int) -> str:
    return " ".join(WORDS[first : last + 1])


# --- the reference's scalar helpers, ported for cross-checking ------------------


def _reference_doc_spans(num_tokens, max_tokens_for_doc, doc_stride):
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def _reference_check_is_max_context(spans, cur_span_index, position):
    best_score, best_span_index = None, None
    for span_index, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_span_index = score, span_index
    return cur_span_index == best_span_index


# --- doc spans and max context ---------------------------------------------------


def test_doc_spans_step_by_stride_until_the_end_is_covered():
    assert doc_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_spans(10, 4, 5) == [(0, 4), (4, 4), (8, 2)]  # stride capped at the window length
    assert doc_spans(4, 4, 3) == [(0, 4)]
    assert doc_spans(0, 4, 3) == [(0, 0)]  # empty context: one empty window


def test_doc_spans_match_the_reference_loop():
    for n, max_doc, stride in itertools.product(range(1, 30), range(1, 9), range(1, 11)):
        assert doc_spans(n, max_doc, stride) == _reference_doc_spans(n, max_doc, stride), (n, max_doc, stride)


def test_max_context_reference_example_bought_belongs_to_span_c():
    # Doc: the man went to the store and bought a gallon of milk; 5 tokens per
    # span, stride 3 -> A [0, 5), B [3, 8), C [6, 11), D [9, 12). "bought" (7) has
    # min context 0 in B and 1 in C.
    spans = doc_spans(12, 5, 3)
    assert spans[:3] == [(0, 5), (3, 5), (6, 5)]
    assert max_context_mask(spans, 12)[:, 7].tolist() == [False, False, True, False]


@pytest.mark.parametrize(
    "grid",
    [
        itertools.product(range(1, 26), range(1, 8), range(1, 9)),
        [(1000, 350, 128), (700, 320, 128), (2000, 361, 64), (900, 250, 300)],
    ],
    ids=["small", "squad-sized"],
)
def test_max_context_matches_reference_check_is_max_context(grid):
    for n, max_doc, stride in grid:
        spans = doc_spans(n, max_doc, stride)
        mask = max_context_mask(spans, n)
        for w, (start, length) in enumerate(spans):
            want = [_reference_check_is_max_context(spans, w, start + i) for i in range(length)]
            assert mask[w, start : start + length].tolist() == want, (n, max_doc, stride, w)
        assert mask.sum(axis=0).tolist() == [1] * n  # each token: exactly one max-context window


# --- answer spans ------------------------------------------------------------------


def test_improve_answer_span_reference_example_narrows_to_1895():
    # Whitespace-word projection of "1895" in "(1895-1943)." covers all of
    # "( 1895 - 1943 ) ."; the sub-span equal to tokenize("1895") is just "1895".
    word_tokens = [_id(t) for t in ["(", "1895", "-", "1943", ")", "."]]
    assert improve_answer_span(word_tokens, 0, 5, [_id("1895")]) == (1, 1)


def test_improve_answer_span_keeps_span_when_no_sub_span_matches():
    # "Japan" annotated inside the single token "japanese": nothing better exists.
    context = [_id("the"), _id("japanese"), _id("electronics")]
    assert improve_answer_span(context, 1, 1, [_id("japan")]) == (1, 1)


def test_answer_token_span_uses_overlap_with_the_annotated_chars():
    # "(1895-1943)." -> ( 1895 - 1943 ) . at chars [0,1) [1,5) [5,6) [6,10) [10,11) [11,12)
    starts, ends = np.array([0, 1, 5, 6, 10, 11]), np.array([1, 5, 6, 10, 11, 12])
    assert answer_token_span(starts, ends, 1, 5) == (1, 1)
    assert answer_token_span(starts, ends, 2, 8) == (1, 3)  # partial tokens count
    assert answer_token_span(starts, ends, 12, 14) is None


def test_training_label_points_at_1895(tokenizer):
    context = "The leader was John Smith (1895-1943)."
    example = _example(context, answer="1895")
    (window,), report = make_windows([example], tokenizer, WindowConfig(64, 16, 32), is_training=True)
    assert window.input_word_ids[window.start_position] == _id("1895")
    assert window.start_position == window.end_position
    start = window.token_char_starts[window.start_position]
    assert context[start : window.token_char_ends[window.end_position]] == "1895"
    assert report.answer_outside_all_windows == []


def test_training_label_picks_the_annotated_one_of_repeated_pieces(tokenizer):
    # "w1-w1", answer the second "w1": a whitespace-word projection plus
    # improve_answer_span would pick the first; char overlap keeps the annotated one.
    context = "w1-w1 w2"
    example = _example(context, answer="w1", answer_start=3)
    (window,), _ = make_windows([example], tokenizer, WindowConfig(64, 16, 32), is_training=True)
    assert window.token_char_starts[window.start_position] == 3
    assert window.start_position == window.end_position


def test_multi_token_answer_label_spans_all_its_tokens(tokenizer):
    context = "the leader was john smith ."
    example = _example(context, answer="john smith")
    (window,), _ = make_windows([example], tokenizer, WindowConfig(64, 16, 32), is_training=True)
    ids = window.input_word_ids[window.start_position : window.end_position + 1]
    assert ids == (_id("john"), _id("smith"))


# --- window layout -------------------------------------------------------------------


def test_window_layout_cls_question_sep_context_sep(tokenizer):
    context = "the leader was john smith"
    (window,), _ = make_windows([_example(context)], tokenizer, WindowConfig(64, 16, 32), is_training=False)
    question_ids = [_id(t) for t in ["when", "was", "john", "smith", "born", "?"]]
    context_ids = [_id(t) for t in context.split()]
    assert window.input_word_ids == (CLS, *question_ids, SEP, *context_ids, SEP)
    assert window.input_type_ids == (0,) * 8 + (1,) * 6
    assert window.input_mask == (1,) * 14
    assert window.token_char_starts == (-1,) * 8 + (0, 4, 11, 15, 20) + (-1,)
    assert window.token_char_ends == (-1,) * 8 + (3, 10, 14, 19, 25) + (-1,)
    assert window.token_is_max_context == (0,) * 8 + (1,) * 5 + (0,)


def test_question_is_truncated_and_context_fills_the_rest(tokenizer):
    config = WindowConfig(seq_len=16, query_len=4, doc_stride=3)
    example = _example(_words(0, 29), question="w50 w51 w52 w53 w54 w55")
    windows, _ = make_windows([example], tokenizer, config, is_training=False)
    first = windows[0]
    assert first.input_word_ids[:6] == (CLS, _id("w50"), _id("w51"), _id("w52"), _id("w53"), SEP)
    assert len(first.input_word_ids) == 16  # 16 - 4 - 3 = 9 context tokens
    assert first.input_word_ids[6:15] == tuple(_id(w) for w in WORDS[0:9])
    assert all(len(w.input_word_ids) <= config.seq_len for w in windows)


def test_long_context_windows_start_every_doc_stride_tokens(tokenizer):
    config = WindowConfig(seq_len=16, query_len=4, doc_stride=4)
    example = _example(_words(0, 29), question="w50 w51")  # 16 - 2 - 3 = 11 context tokens per window
    windows, report = make_windows([example], tokenizer, config, is_training=False)
    starts = [WORDS.index(VOCAB[w.input_word_ids[4]]) for w in windows]
    assert starts == [0, 4, 8, 12, 16, 20]
    for w, start in zip(windows, starts, strict=True):
        piece = w.input_word_ids[4:-1]
        assert piece == tuple(_id(word) for word in WORDS[start : min(start + 11, 30)])
    assert windows[-1].input_word_ids[-2] == _id("w29")
    assert [w.window_index for w in windows] == list(range(6))
    assert report.windows_per_question == {6: 1}
    # Every context character position is claimed by exactly one max-context window.
    claimed = [
        start
        for w in windows
        for start, is_max in zip(w.token_char_starts, w.token_is_max_context, strict=True)
        if is_max
    ]
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 30


def test_answer_labelled_only_in_windows_that_contain_it(tokenizer):
    config = WindowConfig(seq_len=16, query_len=4, doc_stride=4)
    context = _words(0, 29)
    example = _example(context, question="w50 w51", answer="w25")
    windows, report = make_windows([example], tokenizer, config, is_training=True)
    labelled = [w.window_index for w in windows if w.start_position > 0]
    assert labelled == [4, 5]  # windows [16, 27) and [20, 30)
    for w in windows:
        if w.start_position:
            assert w.input_word_ids[w.start_position] == _id("w25")
        else:
            assert w.end_position == 0
    assert report.answer_outside_all_windows == []


def test_answer_longer_than_any_window_is_reported(tokenizer):
    config = WindowConfig(seq_len=16, query_len=4, doc_stride=4)
    context = _words(0, 29)
    example = _example(context, question="w50 w51", answer=_words(2, 14), id="too-long")  # 13 > 11 tokens
    windows, report = make_windows([example], tokenizer, config, is_training=True)
    assert all(w.start_position == w.end_position == 0 for w in windows)
    assert report.answer_outside_all_windows == ["too-long"]


def test_impossible_and_evaluation_windows_have_zero_labels(tokenizer):
    context = "the leader was john smith"
    impossible = _example(context, answer="john smith", is_impossible=True, id="imp")
    windows, report = make_windows([impossible], tokenizer, WindowConfig(64, 16, 32), is_training=True)
    assert [(w.start_position, w.end_position) for w in windows] == [(0, 0)]
    assert report.answer_outside_all_windows == []
    answerable = _example(context, answer="john smith")
    windows, report = make_windows([answerable], tokenizer, WindowConfig(64, 16, 32), is_training=False)
    assert [(w.start_position, w.end_position) for w in windows] == [(0, 0)]
    assert report.answer_outside_all_windows == []


def test_empty_context_gives_one_window_without_context(tokenizer):
    windows, report = make_windows([_example("")], tokenizer, WindowConfig(64, 16, 32), is_training=False)
    assert len(windows) == 1
    assert windows[0].input_word_ids[-2:] == (SEP, SEP)
    assert windows[0].input_type_ids[-1] == 1
    assert report.windows_per_question == {1: 1}


def test_non_ascii_context_char_offsets_cut_the_answer():
    vocab_path = model_cache.default_model_dir() / "vocab.txt"
    tokenizer = WordPieceTokenizer(TokenizerConfig(str(vocab_path)))
    context = "Beyoncé Giselle Knowles-Carter (born 北京, 😀 September 4, 1981) is an American singer."
    example = _example(context, question="When was Beyoncé born?", answer="September 4, 1981")
    (window,), _ = make_windows([example], tokenizer, WindowConfig(), is_training=True)
    start = window.token_char_starts[window.start_position]
    end = window.token_char_ends[window.end_position]
    assert context[start:end] == "September 4, 1981"


# --- ids, report, chunking, codec -------------------------------------------------------


def test_unique_id_is_a_stable_63_bit_hash_not_a_counter():
    assert window_unique_id("56be4db0acb8001400a502ec", 0) == 1882234862513931639
    assert window_unique_id("56be4db0acb8001400a502ec", 1) == 9066094543998666742
    ids = {window_unique_id(f"q{i}", w) for i in range(200) for w in range(5)}
    assert len(ids) == 1000
    assert all(0 <= i < 2**63 for i in ids)


def test_report_counts_questions_windows_and_histogram(tokenizer):
    config = WindowConfig(seq_len=16, query_len=4, doc_stride=4)
    examples = [
        _example(_words(0, 29), question="w50", id="long"),
        _example("w1 w2", question="w50", id="short1"),
        _example("w3", question="w50", id="short2"),
    ]
    windows, report = make_windows(examples, tokenizer, config, is_training=False)
    assert report.questions == 3
    # 30 tokens, 16 - 1 - 3 = 12 per window, stride 4: starts 0, 4, 8, 12, 16, 20.
    assert report.windows == len(windows) == 6 + 1 + 1
    assert report.windows_per_question == {1: 2, 6: 1}
    assert [w.example_id for w in windows] == ["long"] * 6 + ["short1", "short2"]


def test_windows_do_not_depend_on_how_examples_are_chunked(tokenizer):
    config = WindowConfig(seq_len=16, query_len=4, doc_stride=4)
    context = _words(0, 29)
    examples = [
        _example(context, question="w50", answer="w7", id="a"),
        _example(context, question="w51 w52", answer="w20", id="b"),
        _example("w1 w2 w3", question="w50", answer="w2", id="c"),
    ]
    together, _ = make_windows(examples, tokenizer, config, is_training=True)
    one_by_one = [w for e in examples for w in make_windows([e], tokenizer, config, is_training=True)[0]]
    assert together == one_by_one


def _sample_window(**overrides) -> Window:
    fields = dict(
        unique_id=window_unique_id("q-é", 1), example_id="q-é", window_index=1,
        input_word_ids=(CLS, 9, SEP, 20, 21, SEP), input_mask=(1,) * 6, input_type_ids=(0, 0, 0, 1, 1, 1),
        start_position=3, end_position=4, token_char_starts=(-1, -1, -1, 0, 5, -1),
        token_char_ends=(-1, -1, -1, 4, 9, -1), token_is_max_context=(0, 0, 0, 1, 0, 0),
    )  # fmt: skip
    fields.update(overrides)
    return Window(**fields)


def test_tf_example_round_trip_from_proto_and_bytes():
    window = _sample_window()
    proto = window_to_tf_example(window)
    assert window_from_tf_example(proto) == window
    assert window_from_tf_example(proto.SerializeToString()) == window


def test_feature_spec_parses_windows_of_different_lengths():
    short = _sample_window()
    long = _sample_window(
        example_id="other", window_index=0, unique_id=window_unique_id("other", 0),
        input_word_ids=(CLS, 9, 9, SEP, 20, 21, 22, SEP), input_mask=(1,) * 8,
        input_type_ids=(0,) * 4 + (1,) * 4, token_char_starts=(-1,) * 4 + (0, 3, 6, -1),
        token_char_ends=(-1,) * 4 + (2, 5, 8, -1), token_is_max_context=(0,) * 4 + (1, 1, 1, 0),
    )  # fmt: skip
    serialized = [window_to_tf_example(w).SerializeToString() for w in (short, long)]
    parsed = tf.io.parse_example(tf.constant(serialized), window_feature_spec())
    for row, window in enumerate((short, long)):
        for field in dataclasses.fields(Window):
            value = parsed[field.name]
            if isinstance(value, tf.SparseTensor):
                length = len(getattr(window, field.name))
                got = tuple(tf.sparse.to_dense(value)[row, :length].numpy().tolist())
            elif field.name == "example_id":
                got = value[row].numpy().decode("utf-8")
            else:
                got = int(value[row])
            assert got == getattr(window, field.name), field.name


@pytest.mark.parametrize(
    "kwargs", [dict(seq_len=10, query_len=7), dict(query_len=0), dict(doc_stride=0)], ids=str
)
def test_window_config_rejects_sizes_that_leave_no_context(kwargs):
    with pytest.raises(ValueError):
        WindowConfig(**kwargs)
