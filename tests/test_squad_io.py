"""Tests for bertqa.data.squad_io on small inline SQuAD files."""

from __future__ import annotations

import codecs
import json

import pytest

from bertqa.data.raw_example import SquadExample
from bertqa.data.squad_io import (
    DataReport,
    SquadDataError,
    SquadReadConfig,
    merge_reports,
    parse_squad,
    read_squad_file,
)

V1 = SquadReadConfig()
V2 = SquadReadConfig(version_2_with_negative=True)
CONTEXT = "The cat sat on the mat. The Cat ran."


def squad(*qas: dict, context: str = CONTEXT, title: str | None = "Cats", **top) -> bytes:
    article: dict = {"paragraphs": [{"context": context, "qas": list(qas)}]}
    if title is not None:
        article["title"] = title
    return json.dumps({"version": "1.1", "data": [article], **top}).encode("utf-8")


def qa(qid: str = "q1", question: str = "Who sat?", answers=(("cat", 4),), **extra) -> dict:
    return {
        "id": qid,
        "question": question,
        "answers": [{"text": t, "answer_start": s} for t, s in answers],
        **extra,
    }


def parse(data: bytes, config: SquadReadConfig = V1) -> tuple[list[SquadExample], DataReport]:
    return parse_squad(data, "f.json", config)


def test_reads_v1_question_with_all_gold_answers():
    examples, report = parse(squad(qa(answers=[("cat", 4), ("The cat", 0), ("cat", 4)])))
    assert examples == [
        SquadExample(
            id="q1",
            title="Cats",
            context=CONTEXT,
            question="Who sat?",
            answer_texts=("cat", "The cat", "cat"),
            answer_starts=(4, 0, 4),
            is_impossible=False,
        )
    ]
    assert report.to_dict() == {
        "sources": ["f.json"],
        "questions_in": 1,
        "kept": 1,
        "repaired": {},
        "dropped": {},
    }


def test_read_squad_file_reads_through_gfile(tmp_path):
    path = tmp_path / "train.json"
    path.write_bytes(squad(qa()))
    examples, report = read_squad_file(str(path))
    assert [e.id for e in examples] == ["q1"]
    assert report.sources == [str(path)]


def test_missing_file_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(SquadDataError, match=f"^{path}: file not found"):
        read_squad_file(path)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "f.json: the file is empty"),
        (b"  \n", "f.json: the file is empty"),
        (b'{"data": [\xff]}', r"f.json: not UTF-8 \(invalid byte at offset 10\)"),
        (b'{"data": [\n  {"title": }]}', r"f.json: invalid JSON at line 2, column 13"),
        (b"[1, 2]", "f.json: the top level is not an object with a 'data' list"),
        (b'{"version": "1.1"}', "f.json: the top level is not an object with a 'data' list"),
        (b'{"data": [{"title": "A", "paragraphs": []}]}', "f.json: the file has no questions"),
    ],
)
def test_whole_file_problems_are_errors_naming_the_file(data, message):
    with pytest.raises(SquadDataError, match=f"^{message}"):
        parse(data)


def test_utf8_byte_order_mark_is_accepted():
    examples, _ = parse(codecs.BOM_UTF8 + squad(qa()))
    assert len(examples) == 1


def test_non_utf8_offset_counts_the_byte_order_mark():
    with pytest.raises(SquadDataError, match=r"offset 13\)"):
        parse(codecs.BOM_UTF8 + b'{"data": [\xff]}')


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"id": "q1", "question": "Who?", "answers": [{"text": "cat"}]}, "'answer_start' that is missing"),
        (
            {"id": "q1", "question": "Who?", "answers": [{"text": "cat", "answer_start": "4"}]},
            "'answer_start' that is missing or not an integer",
        ),
        ({"id": "q1", "question": "Who?", "answers": [{"answer_start": 4}]}, "'text' that is missing"),
        (
            {"id": "q1", "question": 7, "answers": [{"text": "cat", "answer_start": 4}]},
            "'question' is missing",
        ),
        ({"id": "q1", "question": "Who?", "answers": "cat"}, "'answers' is missing or not a list"),
        ({"id": "q1", "question": "Who?"}, "'answers' is missing or not a list"),
    ],
)
def test_mistyped_question_fields_are_errors_naming_article_and_question(record, problem):
    with pytest.raises(SquadDataError) as info:
        parse(squad(record))
    message = str(info.value)
    assert message.startswith("f.json: ")
    assert problem in message
    assert "(article 'Cats', question 'q1')" in message


def test_missing_id_is_an_error_quoting_the_question():
    with pytest.raises(SquadDataError, match="question 'Who sat\\?' has an 'id' that is missing"):
        parse(squad({"question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]}))


@pytest.mark.parametrize(
    "article, problem",
    [
        ({"title": "Cats"}, "'paragraphs' is missing or not a list"),
        ({"title": "Cats", "paragraphs": [{"qas": []}]}, "'context' is missing or not a string"),
        ({"title": "Cats", "paragraphs": [{"context": "x", "qas": {}}]}, "'qas' is missing or not a list"),
    ],
)
def test_mistyped_article_fields_are_errors_naming_the_article(article, problem):
    with pytest.raises(SquadDataError, match=f"^f.json: .*{problem}.*\\(article 'Cats'\\)"):
        parse(json.dumps({"data": [article]}).encode())


def test_v1_question_without_answers_is_an_error_pointing_at_v2_mode():
    data = squad(qa("q9", answers=[], is_impossible=True))
    with pytest.raises(SquadDataError) as info:
        parse(data)
    assert str(info.value) == (
        "f.json: the question has no answers (article 'Cats', question 'q9'). "
        "Use version_2_with_negative=True for SQuAD 2.0 data, or remove the question."
    )


def test_v2_impossible_question_keeps_plausible_answers_for_reference():
    record = qa("q2", answers=[], is_impossible=True, plausible_answers=[{"text": "mat", "answer_start": 19}])
    examples, report = parse(squad(qa("q1", is_impossible=False), record), V2)
    assert [(e.id, e.is_impossible, e.answer_texts, e.answer_starts) for e in examples] == [
        ("q1", False, ("cat",), (4,)),
        ("q2", True, ("mat",), (19,)),
    ]
    assert report.kept == 2


def test_v2_impossible_question_without_plausible_answers_has_none():
    examples, _ = parse(squad(qa(answers=[], is_impossible=True)), V2)
    assert examples[0].is_impossible
    assert examples[0].answer_texts == () and examples[0].answer_starts == ()


def test_v2_question_without_answers_not_marked_impossible_is_an_error():
    with pytest.raises(SquadDataError, match="has no answers but is not marked is_impossible"):
        parse(squad(qa(answers=[], is_impossible=False)), V2)


def test_v2_impossible_question_with_answers_is_an_error():
    with pytest.raises(SquadDataError, match="marked is_impossible but has answers"):
        parse(squad(qa(is_impossible=True)), V2)


def test_v1_mode_ignores_is_impossible_flag():
    examples, _ = parse(squad(qa(is_impossible=True)))
    assert not examples[0].is_impossible


def test_misaligned_start_moves_to_nearest_occurrence():
    # Case-insensitively "the" occurs at 0, 15 and 24: 17 is nearest 15, 22 nearest 24.
    examples, report = parse(squad(qa("a", answers=[("the", 17)]), qa("b", answers=[("The", 22)])))
    assert [e.answer_starts for e in examples] == [(15,), (24,)]
    assert [e.answer_texts for e in examples] == [("the",), ("The",)]
    assert report.repaired == {"answer_start_misaligned": 2}
    assert report.kept == 2


def test_case_insensitive_repair_takes_the_context_casing():
    # Only "The Cat" (at 24) matches "the cat" near 30; "The cat" at 0 is farther.
    examples, report = parse(squad(qa(answers=[("the cat", 30)])))
    assert examples[0].answer_texts == ("The Cat",)
    assert examples[0].answer_starts == (24,)
    assert report.repaired == {"answer_start_misaligned": 1, "answer_text_case_mismatch": 1}


def test_every_kept_answer_points_at_its_text():
    data = squad(qa("a", answers=[("the", 17), ("CAT", 0)]), qa("b", answers=[("mat", -5)]))
    examples, _ = parse(data)
    for example in examples:
        for text, start in zip(example.answer_texts, example.answer_starts, strict=True):
            assert example.context[start : start + len(text)] == text


def test_answer_not_in_context_drops_the_question():
    examples, report = parse(squad(qa("a"), qa("b", answers=[("dog", 4)])))
    assert [e.id for e in examples] == ["a"]
    assert report.dropped == {"answer_not_in_context": 1}
    assert report.questions_in == report.kept + sum(report.dropped.values()) == 2


def test_one_missing_answer_of_several_is_removed_and_the_question_kept():
    examples, report = parse(squad(qa(answers=[("dog", 4), ("cat", 4), ("", 0)])))
    assert examples[0].answer_texts == ("cat",)
    assert report.repaired == {"answer_not_in_context_removed": 1, "empty_answer_removed": 1}
    assert report.dropped == {}


def test_question_with_only_empty_answers_is_dropped():
    _, report = parse(squad(qa("a"), qa("b", answers=[("", 0)])))
    assert report.dropped == {"empty_answer_text": 1}


def test_impossible_question_losing_a_plausible_answer_is_kept():
    record = qa(answers=[], is_impossible=True, plausible_answers=[{"text": "dog", "answer_start": 1}])
    examples, report = parse(squad(record), V2)
    assert examples[0].is_impossible and examples[0].answer_texts == ()
    assert report.repaired == {"plausible_answer_removed": 1}


def test_empty_context_and_empty_question_are_dropped():
    data = json.dumps(
        {
            "data": [
                {
                    "title": "T",
                    "paragraphs": [
                        {"context": "  ", "qas": [qa("a", answers=[(" ", 0)]), qa("b", answers=[(" ", 1)])]},
                        {"context": CONTEXT, "qas": [qa("c", question=" "), qa("d")]},
                    ],
                }
            ]
        }
    ).encode()
    examples, report = parse(data)
    assert [e.id for e in examples] == ["d"]
    assert report.dropped == {"empty_context": 2, "empty_question": 1}
    assert report.questions_in == 4


def test_exact_duplicate_question_is_dropped():
    examples, report = parse(squad(qa("a"), qa("a")))
    assert len(examples) == 1
    assert report.dropped == {"duplicate_question": 1}


def test_same_id_for_different_questions_is_an_error():
    with pytest.raises(SquadDataError, match="question 'a'\\).*unique id"):
        parse(squad(qa("a"), qa("a", question="What sat?")))


def test_integer_id_and_missing_title_are_repaired():
    data = json.dumps(
        {"data": [{"paragraphs": [{"document_id": 630, "context": CONTEXT, "qas": [qa(262)]}]}]}
    ).encode()
    examples, report = parse(data)
    assert (examples[0].id, examples[0].title) == ("262", "630")
    assert report.repaired == {"id_not_string": 1, "title_missing": 1}


def test_missing_title_without_document_id_uses_the_article_index():
    examples, _ = parse(squad(qa(), title=None))
    assert examples[0].title == "article-0"


def test_strict_mode_raises_on_a_would_be_repair():
    with pytest.raises(SquadDataError) as info:
        parse(squad(qa("q7", answers=[("cat", 5)])), SquadReadConfig(strict=True))
    message = str(info.value)
    assert "[answer_start_misaligned] (article 'Cats', question 'q7')" in message
    assert "strict=False" in message


def test_strict_mode_raises_on_a_would_be_drop():
    with pytest.raises(SquadDataError, match=r"\[answer_not_in_context\] \(article 'Cats', question 'q8'\)"):
        parse(squad(qa("q1"), qa("q8", answers=[("dog", 0)])), SquadReadConfig(strict=True))


def test_strict_mode_accepts_clean_data():
    examples, _ = parse(squad(qa("a"), qa("b")), SquadReadConfig(strict=True))
    assert len(examples) == 2


def test_file_where_every_question_is_dropped_is_an_error():
    with pytest.raises(SquadDataError, match="every question was dropped .*answer_not_in_context"):
        parse(squad(qa(answers=[("dog", 0)])))


def test_merge_adds_counts_and_sources():
    a = DataReport(["a.json"], 3, 2, {"x": 1}, {"d": 1})
    b = DataReport(["b.json"], 5, 5, {"x": 2, "y": 1}, {})
    merged = merge_reports([a, b])
    assert merged.to_dict() == {
        "sources": ["a.json", "b.json"],
        "questions_in": 8,
        "kept": 7,
        "repaired": {"x": 3, "y": 1},
        "dropped": {"d": 1},
    }
    assert a.repaired == {"x": 1}  # inputs unchanged
