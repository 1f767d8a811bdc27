"""Windowing parity on an inline fixture: make_windows against the `tokenizers` reference.

The reference and the explanation categories live in scripts/windowing_parity.py,
which runs the same comparison on real SQuAD data. Here: a small fixture whose
windows must all be identical or explained, one test per explained category that
shows both sides on a minimal case and pins exactly how they differ, and tests that
the detectors explain nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import sys

import pytest

from bertqa.data import windowing
from bertqa.data.raw_example import SquadExample
from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer


def _load_parity_script():
    path = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "windowing_parity.py"
    spec = importlib.util.spec_from_file_location("windowing_parity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


parity = _load_parity_script()
CONFIG = windowing.WindowConfig()  # the default 384/64/128 the script compares at


@pytest.fixture(scope="module")
def ours(vocab_path) -> WordPieceTokenizer:
    return WordPieceTokenizer(TokenizerConfig(vocab_path))


@pytest.fixture(scope="module")
def reference(vocab_path):
    return parity.build_reference_tokenizer(vocab_path)


def _example(qid, context, question, answer, answer_start=None) -> SquadExample:
    start = context.index(answer) if answer_start is None else answer_start
    return SquadExample(qid, "t", context, question, (answer,), (start,))


ASCII = (
    "The leader was John Smith (1895-1943). He was born in Boston, Massachusetts, "
    "and moved to New York in 1920, where he ran a shop on 5th Avenue."
)
ACCENTS = (
    "Beyoncé Giselle Knowles-Carter was born in Houston. Frédéric Chopin left Warsaw "
    "for Paris; the Zürich café served crème brûlée."
)
# ~1,100 WordPieces: seven windows at 384/64/128, with answers in overlaps and near the end.
LONG = " ".join(f"Chapter {i} describes the river number {i} and its {i * 7} bridges." for i in range(1, 90))
PART_OF_WORD = "The Japanese electronics industry is big, and unaffable critics call it overrated."
# Text the two tokenizers normalize differently, before the answer: an explained difference.
FOLDED = "The Große Straße covers 5 km² of land and ends at the old harbour."

FIXTURE = [
    _example("ascii-1", ASCII, "When was John Smith born?", "1895"),
    _example("ascii-2", ASCII, "Where did he run a shop?", "5th Avenue"),
    _example("ascii-3", ASCII, "Which state was he born in?", "Massachusetts,", ASCII.index("Massachusetts")),
    _example("accents-1", ACCENTS, "Who left Warsaw?", "Frédéric Chopin"),
    _example("accents-2", ACCENTS, "What did the café in Zürich serve?", "crème brûlée"),
    _example("long-1", LONG, "How many bridges does river number 3 have?", "21 bridges"),
    _example("long-2", LONG, "Which chapter describes river number 40?", "Chapter 40"),
    _example("long-3", LONG, "How many bridges does river number 77 have?", "539"),
    _example("long-4", LONG, "What does chapter 89 describe?", "the river number 89"),
    _example("word-1", PART_OF_WORD, "Which country's industry is big?", "Japan"),
    _example("word-2", PART_OF_WORD, "What are the critics not?", "affable", PART_OF_WORD.index("affable")),
    _example("word-3", PART_OF_WORD, "What do critics call it?", "rated", PART_OF_WORD.index("rated")),
    _example("folded-1", FOLDED, "Where does the street end?", "the old harbour"),
]


def _tokens(tokenizer: WordPieceTokenizer, ids) -> list[str]:
    return [tokenizer.id_to_token(i) for i in ids]


def _one_window_each(example, ours, reference):
    """Our only window and the reference's only window for a short example."""
    (our_window,), _ = windowing.make_windows([example], ours, CONFIG, is_training=True)
    question, context = parity.reference_tokens(reference, [example.question, example.context])
    (ref_window,) = parity.reference_windows(example, question, context, CONFIG, ours.cls_id, ours.sep_id)
    return our_window, ref_window


def _labelled(tokenizer, window) -> list[str]:
    return _tokens(tokenizer, window.input_word_ids[window.start_position : window.end_position + 1])


def _context(tokenizer, window) -> list[str]:
    return _tokens(tokenizer, window.input_word_ids[window.input_type_ids.index(1) : -1])


def _explanations(example, ours, reference) -> set[str]:
    report = parity.compare([example], ours, reference, CONFIG)
    assert report.unexplained == 0, parity.format_report(report)
    return {c for d in report.window_diffs for c in d.categories}


# ---- the fixture -------------------------------------------------------------------------


def test_fixture_windows_are_identical_or_explained(ours, reference):
    report = parity.compare(FIXTURE, ours, reference, CONFIG)

    assert report.unexplained == 0, parity.format_report(report)
    assert report.our_windows == report.reference_windows == len(FIXTURE) - 4 + 4 * 7
    # Only the FOLDED paragraph differs, and only by its normalization.
    assert {d.example_id for d in report.window_diffs} == {"folded-1"}
    assert report.identical_windows == report.our_windows - 1
    (folded,) = report.window_diffs
    assert folded.fields == ("input_word_ids", "input_mask", "input_type_ids", "start_position", "end_position")
    assert set(folded.categories) == {parity.FULL_CASE_FOLDING, parity.COMPATIBILITY_FOLDING}


def test_fixture_answers_are_labelled_in_every_window_that_holds_them(ours):
    windows, report = windowing.make_windows(FIXTURE, ours, CONFIG, is_training=True)
    assert report.answer_outside_all_windows == []
    labelled = {w.example_id: _labelled(ours, w) for w in windows if w.start_position}
    assert labelled["word-1"] == ["japanese"]  # "Japan" is part of the word: its only token
    assert labelled["word-2"] == ["una", "##ffa", "##ble"]  # "affable" starts inside "una"
    assert labelled["word-3"] == ["##rated"]
    assert labelled["long-3"] == ["53", "##9"]
    long_3 = [w.window_index for w in windows if w.example_id == "long-3" and w.start_position]
    assert len(long_3) == 2  # "539" lies in the overlap of two windows


# ---- one test per explained category ---------------------------------------------------


def test_compatibility_folding_km2_is_two_pieces_for_us_one_for_the_reference(ours, reference):
    example = _example("c", "The park covers 5 km² of land.", "How large is the park?", "5 km²")
    our_window, ref_window = _one_window_each(example, ours, reference)

    assert _context(ours, our_window) == ["the", "park", "covers", "5", "km", "##2", "of", "land", "."]
    assert _context(ours, ref_window) == ["the", "park", "covers", "5", "km²", "of", "land", "."]
    assert _labelled(ours, our_window) == ["5", "km", "##2"]
    assert _labelled(ours, ref_window) == ["5", "km²"]
    assert len(our_window.input_word_ids) == len(ref_window.input_word_ids) + 1
    assert _explanations(example, ours, reference) == {parity.COMPATIBILITY_FOLDING}


def test_full_case_folding_sharp_s_is_ss_for_us(ours, reference):
    example = _example("f", "He lived on the Straße for years.", "Where did he live?", "for years")
    our_window, ref_window = _one_window_each(example, ours, reference)

    assert _context(ours, our_window)[4:7] == ["st", "##ras", "##se"]
    assert _context(ours, ref_window)[4:6] == ["st", "##raße"]
    # The same answer tokens, one position later in our window.
    assert _labelled(ours, our_window) == _labelled(ours, ref_window) == ["for", "years"]
    assert (our_window.start_position, our_window.end_position) == (
        ref_window.start_position + 1,
        ref_window.end_position + 1,
    )
    assert _explanations(example, ours, reference) == {parity.FULL_CASE_FOLDING}


@pytest.mark.parametrize("char", ["\uf061", "\ufffd"], ids=["private-use", "replacement"])
def test_deleted_by_clean_text_is_our_unk_and_nothing_in_the_reference(ours, reference, char):
    context = f"The rate {char} was fixed at 5 percent."
    example = _example("d", context, "What was the rate fixed at?", "5 percent")
    our_window, ref_window = _one_window_each(example, ours, reference)

    assert _context(ours, our_window) == ["the", "rate", "[UNK]", "was", "fixed", "at", "5", "percent", "."]
    assert _context(ours, ref_window) == ["the", "rate", "was", "fixed", "at", "5", "percent", "."]
    assert our_window.start_position == ref_window.start_position + 1
    assert _labelled(ours, our_window) == _labelled(ours, ref_window) == ["5", "percent"]
    assert _explanations(example, ours, reference) == {parity.DELETED_BY_CLEAN_TEXT}


def test_dropped_chars_in_span_our_piece_keeps_its_combining_mark(ours, reference):
    context = "The word pɛ̃ is French."  # "ɛ" + U+0303 COMBINING TILDE at chars 10-11
    example = _example("m", context, "Which word is French?", "pɛ̃")
    our_window, ref_window = _one_window_each(example, ours, reference)
    (our_tokens,) = parity.our_tokens(ours, [context])
    (ref_tokens,) = parity.reference_tokens(reference, [context])

    assert our_tokens.ids == ref_tokens.ids
    assert our_tokens.offsets[3] == (10, 12)  # "##ɛ" with its tilde
    assert ref_tokens.offsets[3] == (10, 11)  # "##ɛ" alone
    assert our_window.input_word_ids == ref_window.input_word_ids
    # The answer ends after the tilde, which no reference token ends at or after but "is".
    assert _labelled(ours, our_window) == ["p", "##ɛ"]
    assert _labelled(ours, ref_window) == ["p", "##ɛ", "is"]
    assert _explanations(example, ours, reference) == {parity.DROPPED_CHARS_IN_SPAN}


def test_expanded_char_span_answer_ends_at_the_syllables_last_jamo_for_us(ours, reference):
    context = "The Greek form Kurisudo 그리스도 has now replaced it."
    example = _example("k", context, "What is the Korean form?", "Kurisudo 그리스도")
    our_window, ref_window = _one_window_each(example, ours, reference)
    ((our_ids, our_starts, our_ends),) = ours.tokenize_with_offsets([context])

    assert our_window.input_word_ids == ref_window.input_word_ids
    # "도" (char 27) is "##ᄃ ##ᅩ": ours gives the first piece an empty span, the reference both the whole char.
    assert _tokens(ours, our_ids[13:15]) == ["##ᄃ", "##ᅩ"]
    assert list(zip(our_starts[13:15], our_ends[13:15], strict=True)) == [(27, 27), (27, 28)]
    assert parity.reference_tokens(reference, [context])[0].offsets[13:15] == ((27, 28), (27, 28))
    assert _labelled(ours, our_window)[-2:] == ["##ᄃ", "##ᅩ"]
    assert _labelled(ours, ref_window)[-2:] == ["##ᅳ", "##ᄃ"]  # the reference drops the last jamo
    assert our_window.end_position == ref_window.end_position + 1
    assert _explanations(example, ours, reference) == {parity.EXPANDED_CHAR_SPAN}


def test_answer_whitespace_edge_reference_takes_the_neighbouring_tokens(ours, reference):
    context = "Various attenuated bacteria were tested. Then more."
    answer = " attenuated bacteria were tested. "  # COVID-QA has answers like this
    example = _example("w", context, "What was tested?", answer, context.index(answer))
    our_window, ref_window = _one_window_each(example, ours, reference)

    assert our_window.input_word_ids == ref_window.input_word_ids
    assert _labelled(ours, our_window) == ["at", "##ten", "##uated", "bacteria", "were", "tested", "."]
    assert _labelled(ours, ref_window) == ["various", *_labelled(ours, our_window), "then"]
    assert _explanations(example, ours, reference) == {parity.ANSWER_WHITESPACE_EDGE}


KOREAN = "The Greek form 그리스도 has now replaced it."  # "그" (char 15) is "ᄀ ##ᅳ", "도" (char 18) "##ᄃ ##ᅩ"
KOREAN_LABEL = ["ᄀ", "##ᅳ", "##ᄅ", "##ᅵ", "##ᄉ", "##ᅳ", "##ᄃ", "##ᅩ"]  # the answer "그리스도" tokenized


def test_answer_start_expanded_char_ours_starts_at_the_first_piece_the_reference_at_the_last(ours, reference):
    example = _example("k2", KOREAN, "What is the Korean form?", "그리스도")
    our_window, ref_window = _one_window_each(example, ours, reference)

    assert our_window.input_word_ids == ref_window.input_word_ids
    assert _labelled(ours, ref_window) == KOREAN_LABEL[1:-1]  # and ends early: expanded_char_span
    assert _labelled(ours, our_window) == KOREAN_LABEL
    assert _explanations(example, ours, reference) == {parity.ANSWER_START_EXPANDED_CHAR, parity.EXPANDED_CHAR_SPAN}


def test_answer_start_expanded_char_detector_matches_a_label_from_the_first_piece(ours):
    """The detector, on the label make_windows gives once the bug above is fixed."""
    example = _example("k3", KOREAN, "What is the Korean form?", "그리스도")
    (window,), _ = windowing.make_windows([example], ours, CONFIG, is_training=True)
    question, context = parity.our_tokens(ours, [example.question, example.context])
    (on_our_tokens,) = parity.reference_windows(example, question, context, CONFIG, ours.cls_id, ours.sep_id)
    assert _labelled(ours, on_our_tokens) == KOREAN_LABEL[1:]
    first_piece = _tokens(ours, window.input_word_ids).index("ᄀ")
    fixed = dataclasses.replace(window, start_position=first_piece, end_position=on_our_tokens.end_position)
    assert _labelled(ours, fixed) == KOREAN_LABEL

    assert parity.classify_rule_difference(parity.RuleCase(example, fixed, on_our_tokens)) == (
        parity.ANSWER_START_EXPANDED_CHAR,
    )
    too_early = dataclasses.replace(fixed, start_position=first_piece - 1)  # "form": not the answer
    assert parity.classify_rule_difference(parity.RuleCase(example, too_early, on_our_tokens)) == ()


# ---- the detectors explain nothing else ------------------------------------------------


def test_id_difference_without_a_normalization_cause_is_unexplained():
    text = "plain ascii text"
    assert parity.classify_id_difference(text, [(100, 0, 5)], [(7, 0, 5)], unk_id=100) is None
    assert parity.classify_id_difference("a ½", [(1, 2, 3)], [(2, 2, 3)], unk_id=100) == parity.COMPATIBILITY_FOLDING


def test_offset_difference_without_a_known_cause_is_unexplained():
    text = "abc def"
    assert parity.classify_offset_difference(text, (1, 0, 3), (1, 0, 2)) is None  # "c" is not a dropped char
    assert parity.classify_offset_difference(text, (1, 1, 3), (1, 0, 3)) is None  # the start moved
    assert parity.classify_offset_difference("ab\u0301", (1, 0, 3), (1, 0, 2)) == parity.DROPPED_CHARS_IN_SPAN


def test_a_label_difference_with_no_cause_is_unexplained(ours, reference):
    example = _example("u", ASCII, "When was John Smith born?", "1895")
    our_window, ref_window = _one_window_each(example, ours, reference)
    shifted = parity.RefWindow(
        ref_window.input_word_ids, ref_window.input_mask, ref_window.input_type_ids,
        ref_window.start_position + 1, ref_window.end_position + 1, ref_window.last_context_char,
    )  # fmt: skip

    diff = parity.explain_window(example, 0, our_window, shifted, shifted, [])
    assert diff.fields == ("start_position", "end_position")
    assert diff.categories == (parity.UNEXPLAINED,)


def test_a_tokenization_difference_after_the_window_does_not_explain_it(ours, reference):
    example = _example("v", ASCII, "When was John Smith born?", "1895")
    our_window, ref_window = _one_window_each(example, ours, reference)
    changed = parity.RefWindow(
        ref_window.input_word_ids[:-2] + ref_window.input_word_ids[-1:], ref_window.input_mask[:-1],
        ref_window.input_type_ids[:-1], ref_window.start_position, ref_window.end_position,
        ref_window.last_context_char,
    )  # fmt: skip
    beyond = parity.TokenDiff("context", 500, 501, (), (), parity.COMPATIBILITY_FOLDING)

    diff = parity.explain_window(example, 0, our_window, ref_window, changed, [beyond])
    assert diff.categories == (parity.UNEXPLAINED,)


# ---- the script ------------------------------------------------------------------------------


def _write_squad(path, examples) -> str:
    paragraphs = [
        {"context": e.context, "qas": [{"id": e.id, "question": e.question,
                                        "answers": [{"text": e.answer_texts[0], "answer_start": e.answer_starts[0]}]}]}
        for e in examples
    ]  # fmt: skip
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}), "utf-8")
    return str(path)


def test_script_prints_counts_and_exits_zero_when_all_is_explained(tmp_path, vocab_path, capsys):
    data = _write_squad(tmp_path / "fixture.json", FIXTURE)

    assert parity.main([data, "--vocab", vocab_path, "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "questions: 5\n" in out
    assert "windows: ours 5, reference 5\nidentical windows: 5\n" in out
    assert out.rstrip().endswith("UNEXPLAINED: 0")


def test_script_exits_one_on_an_unexplained_difference(tmp_path, vocab_path, capsys, monkeypatch):
    data = _write_squad(tmp_path / "fixture.json", FIXTURE[:2])
    monkeypatch.setattr(parity, "reference_label", lambda offsets, start, end: None)  # a broken reference

    assert parity.main([data, "--vocab", vocab_path]) == 1
    out = capsys.readouterr().out
    assert "[UNEXPLAINED] ascii-1 window 0: start_position, end_position (the rules differ on our tokens" in out
    assert out.rstrip().endswith("UNEXPLAINED: 2")
