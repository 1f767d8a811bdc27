"""Read SQuAD JSON files (v1.1 and v2.0) into `SquadExample`s, with validation and repair.

A user's own SQuAD-style file is rarely as clean as the official one, so the reader
sorts every problem into one of three kinds and says which it applied in a
`DataReport` (`questions_in == kept + sum(dropped.values())`):

Errors (`SquadDataError`, one message naming the file and, where known, the article
title and question id, plus what to do; a title or id is shown shortened to 100
characters, with unprintable characters escaped, so that a hostile one cannot flood or
forge log lines):
  * whole-file problems: unreadable or missing file, empty file, bytes that are not
    UTF-8 (with the byte offset), invalid JSON (with line and column), JSON nested
    too deeply for the parser, an integer literal too long to convert, a top level
    that is not an object with a `data` list, a file with no questions at all, a
    file where every question was dropped;
  * text that is not Unicode: a title, id, context, question or answer text with an
    unpaired surrogate escape such as `\\ud800`. JSON allows the escape, but the
    string has no UTF-8 form, so it could be neither tokenized nor written to a
    tf.Example;
  * schema problems: a missing or mistyped `paragraphs`, `context`, `qas`,
    `question`, `id`, `answers`, `text`, `answer_start`, `is_impossible` or
    `plausible_answers`. A broken schema means the file is not the format we think
    it is, and guessing would silently produce wrong labels;
  * labelling contradictions: in v1.1 mode a question with no answers (it is SQuAD
    2.0 data, or a mistake); in v2.0 mode a question with no answers that is not
    marked `is_impossible`, or an impossible one that has `answers`;
  * two questions sharing an id but differing in content: predictions and metrics
    are keyed by id, so there is no right one to keep.

Repairs (the question is kept and counted in `kept` and, once per reason, in
`repaired[reason]`):
  * `answer_start_misaligned`: `context[start:start+len(text)] != text`. Like TFLite
    Model Maker's converter, search the context case-insensitively (lower case, one
    character for one) and take the occurrence whose start is nearest the given
    offset. The search is linear in the context's length, whatever the text.
  * `answer_text_case_mismatch`: the occurrence found differs from the given text in
    case only. The text is replaced by the context's own substring, so that every
    kept answer satisfies `context[start:start+len(text)] == text`, which the
    windowing relies on; metrics lower-case both sides, so scores do not change.
  * `answer_not_in_context_removed` / `empty_answer_removed`: one of several gold
    answers is not in the context (or is empty) and is removed; the others remain.
  * `plausible_answer_removed`: the same for a v2.0 impossible question's
    `plausible_answers`, which are kept only for reference.
  * `id_not_string`: an integer id (COVID-QA has them) becomes its decimal string.
  * `title_missing`: an article without `title` gets its `document_id` (or the one
    its paragraphs share) if it is a string or an integer, else `article-<index>`,
    so that splitting by article still works.

Drops (the question is left out and counted in `dropped[reason]`): data-quality
problems that real annotated data has, where the rest of the file is still good:
  * `empty_context`: the paragraph's context is empty or white space only;
  * `empty_question`: the question is empty or white space only;
  * `duplicate_question`: an exact repeat (same id, context, question and answers)
    of an earlier question, as happens when files are concatenated;
  * `answer_not_in_context`: none of the question's answers occurs in its context;
  * `empty_answer_text`: every answer of the question has empty text.

With `SquadReadConfig(strict=True)` every would-be repair or drop raises a
`SquadDataError` instead, for data that is meant to be clean.

In v1.1 mode `is_impossible` is not read; every answer of a question is kept
(evaluation sets have several gold answers). In v2.0 mode an impossible question
carries its `plausible_answers` (if any) in `answer_texts`/`answer_starts`.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import re
from typing import Any

import tensorflow as tf

from bertqa.data.answer_alignment import (  # the reasons are squad_io's public names too
    ANSWER_NOT_IN_CONTEXT,
    ANSWER_NOT_IN_CONTEXT_REMOVED,
    ANSWER_START_MISALIGNED,
    ANSWER_TEXT_CASE_MISMATCH,
    EMPTY_ANSWER_REMOVED,
    EMPTY_ANSWER_TEXT,
    AlignedAnswers,
    Context,
    align_answers,
)
from bertqa.data.article_split import fallback_title as article_title_fallback
from bertqa.data.raw_example import SquadExample

_LOG = logging.getLogger(__name__)

# Repair reasons.
PLAUSIBLE_ANSWER_REMOVED = "plausible_answer_removed"
ID_NOT_STRING = "id_not_string"
TITLE_MISSING = "title_missing"

# Drop reasons.
EMPTY_CONTEXT = "empty_context"
EMPTY_QUESTION = "empty_question"
DUPLICATE_QUESTION = "duplicate_question"

_DROP_PROBLEMS = {
    ANSWER_NOT_IN_CONTEXT: "no answer of the question occurs in its context",
    EMPTY_ANSWER_TEXT: "every answer of the question has empty text",
}
_REPAIR_PROBLEMS = {
    ANSWER_START_MISALIGNED: "an answer_start does not point at its answer text",
    ANSWER_TEXT_CASE_MISMATCH: "an answer text occurs in the context only with different case",
    ANSWER_NOT_IN_CONTEXT_REMOVED: "an answer does not occur in the context",
    EMPTY_ANSWER_REMOVED: "an answer has empty text",
    PLAUSIBLE_ANSWER_REMOVED: "a plausible answer does not occur in the context",
    ID_NOT_STRING: "the question id is not a string",
    TITLE_MISSING: "the article has no title",
}
_FIX_SCHEMA = "Fix the record so that it follows the SQuAD JSON layout."
_STRICT_HINT = "Fix the record, or read with strict=False to {action} it and count it in the DataReport."
# A lone UTF-16 surrogate: what a JSON escape such as \ud800 without its pair decodes to.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Longest title or id a message shows: a 1 MB title would otherwise be a 1 MB message.
_SHOWN_CHARS = 100


class SquadDataError(ValueError):
    """A SQuAD file that cannot be read as asked; the message says where and what to do."""


@dataclasses.dataclass(frozen=True)
class SquadReadConfig:
    """How to read a SQuAD file.

    version_2_with_negative: read `is_impossible` and allow unanswerable questions.
    strict: raise on the first record that would otherwise be repaired or dropped.
    """

    version_2_with_negative: bool = False
    strict: bool = False


@dataclasses.dataclass
class DataReport:
    """What reading did. Counts are questions: questions_in == kept + sum(dropped).

    `repaired[reason]` counts kept questions that needed that repair (a question with
    two repaired answers counts once per reason).
    """

    sources: list[str] = dataclasses.field(default_factory=list)
    questions_in: int = 0
    kept: int = 0
    repaired: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "sources": list(self.sources),
            "questions_in": self.questions_in,
            "kept": self.kept,
            "repaired": dict(sorted(self.repaired.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }

    def merge(self, other: DataReport) -> DataReport:
        """A new report covering both; neither input is changed."""
        return DataReport(
            sources=self.sources + other.sources,
            questions_in=self.questions_in + other.questions_in,
            kept=self.kept + other.kept,
            repaired=_add_counts(self.repaired, other.repaired),
            dropped=_add_counts(self.dropped, other.dropped),
        )

    def summary(self) -> str:
        return (
            f"{', '.join(self.sources)}: {self.questions_in} questions in, {self.kept} kept, "
            f"repaired {dict(sorted(self.repaired.items()))}, dropped {dict(sorted(self.dropped.items()))}"
        )


def merge_reports(reports: list[DataReport]) -> DataReport:
    merged = DataReport()
    for report in reports:
        merged = merged.merge(report)
    return merged


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    total = dict(a)
    for key, value in b.items():
        total[key] = total.get(key, 0) + value
    return total


def read_squad_file(
    path: str, config: SquadReadConfig = SquadReadConfig()
) -> tuple[list[SquadExample], DataReport]:
    """Reads one SQuAD JSON file (local or any tf.io.gfile filesystem such as gs://)."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except tf.errors.NotFoundError as e:
        raise SquadDataError(f"{path}: file not found. Check the path.") from e
    except tf.errors.OpError as e:
        raise SquadDataError(f"{path}: cannot be read ({e.message}). Check the path and permissions.") from e
    return parse_squad(data, path, config)


def parse_squad(
    data: bytes, source: str, config: SquadReadConfig = SquadReadConfig()
) -> tuple[list[SquadExample], DataReport]:
    """Parses the bytes of a SQuAD JSON file; `source` names it in messages and the report."""
    articles = _load_articles(data, source)
    reader = _Reader(source, config)
    for index, article in enumerate(articles):
        reader.read_article(index, article)
    report = reader.report
    if report.questions_in == 0:
        raise SquadDataError(
            f"{source}: the file has no questions. Check that it is a SQuAD file with "
            "data[].paragraphs[].qas[]."
        )
    if report.kept == 0:
        raise SquadDataError(
            f"{source}: every question was dropped ({dict(sorted(report.dropped.items()))}). "
            "Check the file's answers and contexts."
        )
    _LOG.info("Read %s", report.summary())
    return reader.examples, report


def _load_articles(data: bytes, source: str) -> list:
    # A UTF-8 byte-order mark is legal UTF-8 that json.loads refuses; skip it.
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    if not data[skip:].strip():
        raise SquadDataError(f"{source}: the file is empty. Give a SQuAD JSON file.")
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise SquadDataError(
            f"{source}: not UTF-8 (invalid byte at offset {e.start + skip}). Re-save the file as UTF-8 JSON."
        ) from e
    try:
        top = json.loads(text)
    except json.JSONDecodeError as e:
        raise SquadDataError(
            f"{source}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}). Fix the JSON syntax."
        ) from e
    except RecursionError as e:
        # The json module recurses once per nesting level; 10,000 '[' are valid JSON
        # syntax it cannot follow, and no SQuAD file is more than 6 levels deep.
        raise SquadDataError(
            f"{source}: the JSON is nested too deeply to parse (a SQuAD file is 6 levels deep). "
            "Fix the JSON structure."
        ) from e
    except ValueError as e:
        # The other ValueError json.loads raises: an integer literal longer than Python
        # converts (sys.get_int_max_str_digits, 4300 digits), which no SQuAD field has.
        raise SquadDataError(
            f"{source}: invalid JSON (an integer literal too long to convert). Fix the number."
        ) from e
    if not isinstance(top, dict) or not isinstance(top.get("data"), list):
        raise SquadDataError(
            f"{source}: the top level is not an object with a 'data' list. "
            'A SQuAD file looks like {"version": ..., "data": [{"title": ..., "paragraphs": [...]}]}.'
        )
    return top["data"]


@dataclasses.dataclass(frozen=True)
class _Where:
    """Where a record sits, for messages."""

    source: str
    title: str | None = None
    qid: str | None = None

    def error(self, problem: str, todo: str) -> SquadDataError:
        parts = []
        if self.title is not None:
            parts.append(f"article '{_shown(self.title)}'")
        if self.qid is not None:
            parts.append(f"question '{_shown(self.qid)}'")
        where = f" ({', '.join(parts)})" if parts else ""
        return SquadDataError(f"{self.source}: {problem}{where}. {todo}")


class _Reader:
    """Walks articles, paragraphs and questions, filling `examples` and `report`."""

    def __init__(self, source: str, config: SquadReadConfig):
        self.source = source
        self.config = config
        self.examples: list[SquadExample] = []
        self.report = DataReport(sources=[source])
        # id -> content signature, to tell exact repeats from id collisions.
        self._seen: dict[str, tuple] = {}

    def read_article(self, index: int, article: Any) -> None:
        where = _Where(self.source)
        if not isinstance(article, dict):
            raise where.error(f"data[{index}] is not an object", _FIX_SCHEMA)
        title, title_repairs = self._title(index, article)
        where = _Where(self.source, title=title)
        _check_text(where, title, "the article's title")
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise where.error("'paragraphs' is missing or not a list", _FIX_SCHEMA)
        for paragraph in paragraphs:
            self._read_paragraph(where, paragraph, title_repairs)

    def _title(self, index: int, article: dict) -> tuple[str, frozenset[str]]:
        title = article.get("title")
        if isinstance(title, str):
            return title, frozenset()
        if title is not None:
            raise _Where(self.source).error(f"data[{index}] has a 'title' that is not a string", _FIX_SCHEMA)
        return article_title_fallback(index, article), frozenset({TITLE_MISSING})

    def _read_paragraph(self, where: _Where, paragraph: Any, inherited: frozenset[str]) -> None:
        if not isinstance(paragraph, dict):
            raise where.error("a paragraph is not an object", _FIX_SCHEMA)
        context = paragraph.get("context")
        if not isinstance(context, str):
            raise where.error("a paragraph's 'context' is missing or not a string", _FIX_SCHEMA)
        _check_text(where, context, "a paragraph's 'context'")
        qas = paragraph.get("qas")
        if not isinstance(qas, list):
            raise where.error("a paragraph's 'qas' is missing or not a list", _FIX_SCHEMA)
        searchable = Context(context)
        for qa in qas:
            self._read_question(where, searchable, qa, inherited)

    def _read_question(self, where: _Where, searchable: Context, qa: Any, inherited: frozenset[str]) -> None:
        self.report.questions_in += 1
        if not isinstance(qa, dict):
            raise where.error("a 'qas' entry is not an object", _FIX_SCHEMA)
        qid, id_repairs = self._question_id(where, qa)
        where = dataclasses.replace(where, qid=qid)
        _check_text(where, qid, "the question's 'id'")
        question = qa.get("question")
        if not isinstance(question, str):
            raise where.error("'question' is missing or not a string", _FIX_SCHEMA)
        _check_text(where, question, "'question'")
        is_impossible = self._is_impossible(where, qa)
        answers = self._answers(where, searchable, qa, is_impossible)
        context = searchable.text

        # Errors above are about the schema; only now, with the record known to be
        # well-formed, decide whether it is usable.
        if not context.strip():
            self._drop(where, EMPTY_CONTEXT, "the context is empty")
            return
        if not question.strip():
            self._drop(where, EMPTY_QUESTION, "the question is empty")
            return
        if answers.empty_reason is not None:
            self._drop(where, answers.empty_reason, _DROP_PROBLEMS[answers.empty_reason])
            return
        example = SquadExample(
            id=qid,
            title=where.title or "",
            context=context,
            question=question,
            answer_texts=answers.texts,
            answer_starts=answers.starts,
            is_impossible=is_impossible,
        )
        if self._is_repeat(where, example):
            self._drop(where, DUPLICATE_QUESTION, "the question repeats an earlier one with the same id")
            return
        repairs = inherited | id_repairs | answers.repairs
        for reason in sorted(repairs):
            self._repair(where, reason)
        for reason in repairs:
            self.report.repaired[reason] = self.report.repaired.get(reason, 0) + 1
        self.report.kept += 1
        self.examples.append(example)

    def _question_id(self, where: _Where, qa: dict) -> tuple[str, frozenset[str]]:
        qid = qa.get("id")
        if isinstance(qid, str):
            return qid, frozenset()
        # bool is an int subclass, but True is no id.
        if isinstance(qid, int) and not isinstance(qid, bool):
            return str(qid), frozenset({ID_NOT_STRING})
        question = qa.get("question")
        if isinstance(question, str):
            where = dataclasses.replace(where, qid=None)
            problem = f"question {question[:60]!r} has an 'id' that is missing or not a string"
        else:
            problem = "a question has an 'id' that is missing or not a string"
        raise where.error(problem, _FIX_SCHEMA)

    def _is_impossible(self, where: _Where, qa: dict) -> bool:
        if not self.config.version_2_with_negative:
            return False
        if "is_impossible" not in qa:
            # Files without the flag say it by leaving `answers` empty.
            answers = qa.get("answers")
            return isinstance(answers, list) and not answers
        value = qa["is_impossible"]
        if not isinstance(value, bool):
            raise where.error("'is_impossible' is not true or false", _FIX_SCHEMA)
        return value

    def _answers(self, where: _Where, context: Context, qa: dict, is_impossible: bool) -> AlignedAnswers:
        given = qa.get("answers", [] if is_impossible else None)
        if not isinstance(given, list):
            raise where.error("'answers' is missing or not a list", _FIX_SCHEMA)
        raw = [self._answer_fields(where, answer, "answers") for answer in given]
        if is_impossible:
            if raw:
                raise where.error(
                    "the question is marked is_impossible but has answers",
                    "Set is_impossible to false, or move the answers to 'plausible_answers'.",
                )
            plausible = qa.get("plausible_answers", [])
            if not isinstance(plausible, list):
                raise where.error("'plausible_answers' is not a list", _FIX_SCHEMA)
            raw = [self._answer_fields(where, answer, "plausible_answers") for answer in plausible]
            answers = align_answers(context, raw)
            # An impossible question needs no answer, so losing plausible ones is a repair only.
            removed = frozenset({PLAUSIBLE_ANSWER_REMOVED}) if len(answers.texts) < len(raw) else frozenset()
            repairs = (answers.repairs - {ANSWER_NOT_IN_CONTEXT_REMOVED, EMPTY_ANSWER_REMOVED}) | removed
            return dataclasses.replace(answers, repairs=repairs, empty_reason=None)
        if not raw:
            raise where.error(*self._no_answer_problem())
        return align_answers(context, raw)

    def _no_answer_problem(self) -> tuple[str, str]:
        if self.config.version_2_with_negative:
            return (
                "the question has no answers but is not marked is_impossible",
                "Set is_impossible to true, or add its answers.",
            )
        return (
            "the question has no answers",
            "Use version_2_with_negative=True for SQuAD 2.0 data, or remove the question.",
        )

    def _answer_fields(self, where: _Where, answer: Any, key: str) -> tuple[str, int]:
        if not isinstance(answer, dict):
            raise where.error(f"an entry of '{key}' is not an object", _FIX_SCHEMA)
        text = answer.get("text")
        if not isinstance(text, str):
            raise where.error(
                f"an entry of '{key}' has a 'text' that is missing or not a string", _FIX_SCHEMA
            )
        _check_text(where, text, f"a 'text' in '{key}'")
        start = answer.get("answer_start")
        if not isinstance(start, int) or isinstance(start, bool):
            raise where.error(
                f"an entry of '{key}' has an 'answer_start' that is missing or not an integer", _FIX_SCHEMA
            )
        return text, start

    def _is_repeat(self, where: _Where, example: SquadExample) -> bool:
        signature = (example.context, example.question, example.answer_texts, example.is_impossible)
        previous = self._seen.get(example.id)
        if previous is None:
            self._seen[example.id] = signature
            return False
        if previous != signature:
            raise where.error(
                "the question id is used by an earlier, different question",
                "Give every question a unique id.",
            )
        return True

    def _drop(self, where: _Where, reason: str, problem: str) -> None:
        if self.config.strict:
            raise where.error(f"{problem} [{reason}]", _STRICT_HINT.format(action="drop"))
        self.report.dropped[reason] = self.report.dropped.get(reason, 0) + 1

    def _repair(self, where: _Where, reason: str) -> None:
        if self.config.strict:
            raise where.error(f"{_REPAIR_PROBLEMS[reason]} [{reason}]", _STRICT_HINT.format(action="repair"))


def _shown(text: str) -> str:
    """`text` as a message shows it: at most _SHOWN_CHARS characters, unprintable ones escaped."""
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    if text.isprintable():
        return text
    # A newline would forge a log line and a lone surrogate cannot even be printed.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _check_text(where: _Where, text: str, what: str) -> None:
    if _SURROGATE.search(text):
        raise where.error(
            f"{what} contains an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode text",
            "Fix the escape: a character beyond U+FFFF is written as a pair of \\u escapes.",
        )


