"""Fuzzing the SQuAD reader (bertqa.data.squad_io) with hostile files, by property-based testing.

Hypothesis generates SQuAD files three ways, so that the cases reach the reader's deep
paths and not only the JSON parse error: mostly-valid documents with a few structural
mutations (wrong types at any level, missing keys, repeats, deep nesting, huge and empty
strings, unpaired surrogates, offsets out of range, negative, float or bool, duplicate ids,
answers outside their context, contexts up to 1 MB), serialized with or without BOMs and
sometimes corrupted byte-wise; raw bytes and JSON-token soup; and nesting up to 100,000
levels. Each file is read in v1.1 or v2.0 mode, strict and not, from bytes or a file.

The property: the reader raises `SquadDataError` with a one-line message that starts with
the file's name, or returns examples whose DataReport adds up (questions_in == kept +
sum(dropped), len(examples) == kept), whose answers point at their text and which
round-trip through tf.Example; strict mode raises exactly where the lenient one repairs
or drops. Never another exception; each case under CASE_SECONDS (a timer interrupts a
hang, which hypothesis's deadline cannot: it judges a case only once it returns); a file
of 256 KB or more read within MEMORY_PER_INPUT_BYTE times its size (+ MEMORY_SLACK),
traced with tracemalloc. A third property puts one fault into a clean file and checks
that the message names its article and question. The faults found are kept as fixed cases
at the end.

Size: FUZZ_CASES (1,500) examples for the main property and a third of that for each of
the others; the file takes 30-50 s on the project's 2-core machine. BERTQA_FUZZ_CASES
overrides it (20000 for a long campaign). Cases are derandomized, so CI runs the same ones
every time and a failure reproduces; BERTQA_FUZZ_SEED=<int> draws a different, still
reproducible, set. No example database is kept (database=None), and Hypothesis's caches
go to $TMPDIR/bertqa-hypothesis (or $HYPOTHESIS_STORAGE_DIRECTORY), never to .hypothesis/
in the working tree.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import signal
import tempfile
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, configuration, given, seed, settings
from hypothesis import strategies as st

from bertqa.data import squad_io
from bertqa.data.raw_example import from_tf_example, to_tf_example
from bertqa.data.squad_io import SquadDataError, SquadReadConfig, parse_squad, read_squad_file

FUZZ_CASES = int(os.environ.get("BERTQA_FUZZ_CASES", "1500"))
FUZZ_SEED = os.environ.get("BERTQA_FUZZ_SEED")
CASE_SECONDS = float(os.environ.get("BERTQA_FUZZ_CASE_SECONDS", "10"))
# What reading may hold at once: the bytes decoded, the parsed strings, and for a context
# that needs an answer searched, its folded and reversed forms; 4 bytes a character when one
# character of a string is beyond U+FFFF. A list of every occurrence of a one-letter answer
# in a 1 MB context (what the reader once built) is about 90 MB and fails this.
MEMORY_PER_INPUT_BYTE = 24
MEMORY_SLACK = 16 << 20
TRACED_FROM_BYTES = 256 << 10

REPAIRS = {
    squad_io.ANSWER_START_MISALIGNED, squad_io.ANSWER_TEXT_CASE_MISMATCH, squad_io.ANSWER_NOT_IN_CONTEXT_REMOVED,
    squad_io.EMPTY_ANSWER_REMOVED, squad_io.PLAUSIBLE_ANSWER_REMOVED, squad_io.ID_NOT_STRING, squad_io.TITLE_MISSING,
}
DROPS = {
    squad_io.EMPTY_CONTEXT, squad_io.EMPTY_QUESTION, squad_io.DUPLICATE_QUESTION, squad_io.ANSWER_NOT_IN_CONTEXT,
    squad_io.EMPTY_ANSWER_TEXT,
}
# Letters whose lower case is special: two characters ('İ'), position-dependent ('Σ'),
# no upper case ('ß'), a combining mark; so case-insensitive repairs are exercised.
ALPHABET = "aAbB cC.,İiΣσςßé\u0301\u00e9d\t\n😀"
HOSTILE_STRINGS = ["", " ", "\n\t ", "\ud800", "a\udfffb", "\udc00\ud800", "\x00", "../../etc/x", "a/../../b",
                   "/abs/path", "<script>alert(1)</script>", "\u2028", "\ufeff", "O'Brien", "x" * 150, "NaN"]
# Hypothesis caches what it learns of the sources and of Unicode in a storage directory,
# database or not, and its pytest plugin does so while collecting, before any fixture:
# so it is moved here, at import, out of the working tree (.hypothesis/) into the temp dir.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    configuration.set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "bertqa-hypothesis"))
FUZZ_SETTINGS = dict(
    deadline=None,  # the per-case timer below bounds time; a deadline would only flake under load
    database=None,
    derandomize=FUZZ_SEED is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _seeded(test):
    return seed(int(FUZZ_SEED))(test) if FUZZ_SEED is not None else test


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def interrupt(signum, frame):
        raise CaseTimeout(f"one case took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- strategies ----------------------------------------------------------------------------------

small_text = st.text(ALPHABET, max_size=12)
any_text = st.one_of(
    small_text,
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=8),  # any UTF-8 encodable character
    st.text(st.characters(categories=["Cs", "Cc", "Zl", "Zp", "Lu"]), max_size=4),  # surrogates, controls
)
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 10**30, -(10**30), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), any_text,
    st.lists(st.integers(-3, 3), max_size=2), st.dictionaries(small_text, st.integers(), max_size=2),
)
# Strategies are built once, here: building them in every draw costs more than the reading under test.
hostile_ids = st.one_of(st.sampled_from(["a/../../b", "../x", "q1\n", "", "q0", "q1"]), st.integers(-5, 2**64),
                        any_text, junk)
percent = st.integers(0, 99)
question_text = st.one_of(st.just("Who is it?"), small_text)
bad_start = st.one_of(st.floats(), st.booleans(), st.none(), st.integers(-5, 50).map(str))
answer_kinds = st.sampled_from(["exact", "exact", "exact", "shifted", "swapcase", "foreign", "empty"])
shifts = st.one_of(st.integers(-20, 20), st.sampled_from(["-1", "-1e30", "1e30", "end", "end+1"]))
suffixes = st.sampled_from(["", "", "b", "Σ", "z", "\u0301"])
big_sizes = st.sampled_from([10_000, 10_000, 250_000, 1_000_000])
base_text = st.text(ALPHABET, min_size=1, max_size=6)
context_text = st.text(ALPHABET, min_size=1, max_size=80)
document_ids = st.one_of(st.integers(), any_text, junk)
paragraph_ids = st.one_of(st.integers(0, 3), junk)
title_kinds = st.sampled_from(["title", "title", "title", "missing", "document_id"])
versions = st.sampled_from(["1.1", "v2.0", float("nan")])
mutation_counts = st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 4])
counts = {(low, high): st.integers(low, high) for low in (0, 1) for high in (1, 2, 3, 4, 5, 29)}


def rare(draw, rate: int) -> bool:
    """True with probability rate/100: how a document's hostility decides each of its fields."""
    return rate > 0 and draw(percent) < rate


def draw_big_text(draw) -> str:
    """10 KB to 1 MB: a short random text repeated (so answers occur in it many times, in any case)."""
    base, size = draw(base_text), draw(big_sizes)
    return (base * (size // len(base) + 1))[:size]


def draw_answer(draw, context: str, rate: int) -> dict:
    """Mostly a slice of the context with its offset; then a shifted, case-swapped, foreign or empty one."""
    kind = draw(answer_kinds)
    if context and kind != "foreign":
        start = draw(st.integers(0, len(context) - 1))
        length = draw(st.integers(1, min(len(context) - start, 6000)))
        text = context[start:start + length]
    else:
        start, text = draw(counts[1, 29]) - 3, draw(any_text if rare(draw, rate) else small_text)
    if kind == "shifted":
        shift = draw(shifts)
        start = {"-1": -1, "-1e30": -(10**30), "1e30": 10**30, "end": len(context),
                 "end+1": len(context) + 1}.get(shift, start + shift if isinstance(shift, int) else start)
    elif kind == "swapcase":
        text = text.swapcase() + draw(suffixes)  # a suffix makes it likely to be nowhere in the context
    elif kind == "empty":
        text = ""
    value: dict = {"text": text, "answer_start": start}
    if rare(draw, rate):
        value["answer_start"] = draw(bad_start)
    return value


def draw_question(draw, context: str, rate: int, number: int, squad2: bool) -> dict:
    # Hostile, or likely another question's; else unique.
    qid = draw(hostile_ids) if rare(draw, rate) else f"q{number}"
    text = draw(any_text) if rare(draw, rate) else draw(question_text)
    record: dict = {"id": qid, "question": text}
    n_answers = 0 if rare(draw, rate) else draw(counts[1, 3])
    record["answers"] = [draw_answer(draw, context, rate) for _ in range(n_answers)]
    if rare(draw, rate):
        record["is_impossible"] = draw(junk)
    elif squad2 and draw(counts[0, 2]) == 0:
        # SQuAD 2.0 style: flagged, the answers possibly moved to plausible_answers.
        record["is_impossible"] = impossible = draw(st.booleans())
        if impossible and draw(counts[0, 3]):
            record["plausible_answers"] = record.pop("answers")
            record["answers"] = []
    return record


@st.composite
def document(draw) -> dict:
    """A SQuAD document; its hostility (percent) says how often a field is wrong or odd."""
    rate = draw(st.sampled_from([0, 0, 0, 2, 5, 20]))
    squad2 = draw(counts[0, 2]) == 0
    articles, numbers = [], iter(range(1_000_000))
    for index in range(draw(counts[0 if rare(draw, rate) else 1, 3])):
        article: dict = {}
        title = draw(title_kinds)
        if title == "title":
            article["title"] = draw(any_text) if rare(draw, rate) else f"Article {index}"
        elif title == "document_id":
            article["document_id"] = draw(document_ids)
        if rare(draw, rate):
            article["title"] = draw(junk)
        paragraphs = []
        for _ in range(draw(counts[0 if rare(draw, rate) else 1, 3])):
            size = draw(counts[0, 29])
            if size == 0:
                context = draw_big_text(draw)
            elif size < 3:
                context = draw(any_text if rare(draw, rate) else small_text)
            else:
                context = draw(context_text)
            qas = [draw_question(draw, context, rate, next(numbers), squad2)
                   for _ in range(draw(counts[0 if rare(draw, rate) else 1, 4]))]
            paragraph: dict = {"context": context, "qas": qas}
            if draw(counts[0, 5]) == 0:
                paragraph["document_id"] = draw(paragraph_ids)
            paragraphs.append(paragraph)
        article["paragraphs"] = paragraphs
        articles.append(article)
    doc: dict = {"version": draw(versions), "data": articles}
    for _ in range(draw(mutation_counts)):
        doc = mutate(draw, doc)
    return doc


def _slots(node, out: list, depth: int = 0) -> list:
    """Every (container, key) in the document down to 40 levels, the root first as (None, None)."""
    if not out:
        out.append((None, None))
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((node, key))
        if depth < 40:
            _slots(value, out, depth + 1)
    return out


mutations = st.sampled_from(["delete", "junk", "wrap_list", "wrap_dict", "repeat", "nest", "big"])
depths = st.sampled_from([50, 900, 10_000])


def mutate(draw, doc):
    """One structural change anywhere in the document (in place; the root may be replaced)."""
    slots = _slots(doc, [])
    container, key = slots[draw(st.integers(0, len(slots) - 1))]
    value = doc if container is None else container[key]
    action = draw(mutations)
    if action == "delete" and container is not None:
        del container[key]
        return doc
    if action == "repeat" and isinstance(container, list):
        container.append(value)  # an exact repeat: a duplicate article, question or answer
        return doc
    new = {"junk": lambda: draw(junk), "wrap_list": lambda: [value], "wrap_dict": lambda: {"text": value},
           "nest": lambda: _nested(value, draw(depths)),
           "big": lambda: draw_big_text(draw), "repeat": lambda: value, "delete": lambda: None}[action]()
    if container is None:
        return new
    container[key] = new
    return doc


def _nested(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


def _dumps(doc, ensure_ascii: bool) -> bytes:
    # Deep nesting would stop json.dumps itself; write those levels by hand.
    try:
        text = json.dumps(doc, ensure_ascii=ensure_ascii, allow_nan=True)
    except RecursionError:
        return b'{"data": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    # Lone surrogates become the raw (invalid) UTF-8 bytes a broken writer leaves.
    return text.encode("utf-8", "surrogatepass")


prefixes = st.sampled_from([b""] * 8 + [codecs.BOM_UTF8, codecs.BOM_UTF8, codecs.BOM_UTF8 * 2, codecs.BOM_UTF16_LE,
                                         b" \n"])
corruptions = st.sampled_from(["none"] * 18 + ["insert", "truncate", "replace"])
bad_bytes = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"', b"}", b"\\", b"NaN", b"[" * 5000,
                             b"1" * 5000])


@st.composite
def structured_file(draw) -> bytes:
    # ensure_ascii=False writes lone surrogates as raw bytes, which are not UTF-8: mostly not.
    data = draw(prefixes) + _dumps(draw(document()), draw(counts[0, 4]) > 0)
    corruption = draw(corruptions)
    if corruption != "none":
        at = draw(st.integers(0, len(data) - 1))
        if corruption == "truncate":
            data = data[:at]
        else:
            data = data[:at] + draw(bad_bytes) + data[at + (corruption == "replace"):]
    return data


TOKENS = [b"{", b"}", b"[", b"]", b":", b",", b'"data"', b'"paragraphs"', b'"qas"', b'"context"', b'"id"',
          b'"question"', b'"answers"', b'"text"', b'"answer_start"', b'"title"', b'"is_impossible"', b'"x"',
          b'"\\ud800"', b'"\\ud83d\\ude00"', b"NaN", b"-Infinity", b"1e999", b"-0", b"true", b"null", b"3",
          b"1" * 4400, b"\xff", b"\xef\xbb\xbf", b" ", b'"', b"\\"]
raw_file = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join),
    st.tuples(st.sampled_from([b"[", b'{"a":', b'{"data":[']), st.integers(1, 100_000))
    .map(lambda t: t[0] * t[1]),
    st.integers(1, 100_000).map(lambda n: b'{"data": ' + b"[" * n + b"]" * n + b"}"),
)
configs = st.builds(SquadReadConfig, version_2_with_negative=st.booleans())


# --- the property --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _read(data: bytes, config: SquadReadConfig, via_file: bool, scratch):
    """(outcome, source): outcome is (examples, report) or the SquadDataError raised."""
    if via_file:
        path = scratch / "fuzz.json"
        path.write_bytes(data)
        source = str(path)
    else:
        source = "fuzz.json"
    traced = len(data) >= TRACED_FROM_BYTES
    if traced:
        tracemalloc.start()
    try:
        with time_limit(CASE_SECONDS):
            try:
                outcome = read_squad_file(source, config) if via_file else parse_squad(data, source, config)
            except SquadDataError as error:
                outcome = error
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            assert peak <= MEMORY_PER_INPUT_BYTE * len(data) + MEMORY_SLACK, (
                f"reading {len(data)} bytes peaked at {peak} bytes")
    finally:
        if traced:
            tracemalloc.stop()
    return outcome, source


def check_error(error: SquadDataError, source: str) -> None:
    message = str(error)
    assert message.startswith(f"{source}: "), message
    # One printable line of bounded size, whatever the titles and ids: no forged log lines,
    # nothing that cannot be written to a UTF-8 log.
    assert message.isprintable(), message
    message.encode("utf-8")
    assert len(message) < 1500 + len(source), message


def check_examples(examples, report, source: str, config: SquadReadConfig) -> None:
    assert report.sources == [source]
    assert report.questions_in == report.kept + sum(report.dropped.values())
    assert len(examples) == report.kept >= 1
    assert set(report.repaired) <= REPAIRS and set(report.dropped) <= DROPS
    assert all(0 < n <= report.kept for n in report.repaired.values())
    assert all(n > 0 for n in report.dropped.values())
    assert len({e.id for e in examples}) == len(examples)
    for example in examples:
        assert all(isinstance(v, str) for v in (example.id, example.title, example.context, example.question))
        assert example.context.strip() and example.question.strip()
        assert len(example.answer_texts) == len(example.answer_starts)
        for text, start in zip(example.answer_texts, example.answer_starts, strict=True):
            assert isinstance(start, int) and not isinstance(start, bool) and start >= 0
            assert text and example.context[start:start + len(text)] == text
        if not example.is_impossible:
            assert example.answer_texts
        if not config.version_2_with_negative:
            assert not example.is_impossible
        # SquadExampleGen writes each example as a tf.Example: it must encode (no lone
        # surrogates) and read back the same.
        assert from_tf_example(to_tf_example(example).SerializeToString()) == example


def check_file(data: bytes, config: SquadReadConfig, via_file: bool, scratch) -> None:
    lenient, source = _read(data, config, via_file, scratch)
    strict, _ = _read(data, SquadReadConfig(config.version_2_with_negative, strict=True), via_file, scratch)
    for outcome, mode in ((lenient, config), (strict, SquadReadConfig(config.version_2_with_negative, True))):
        if isinstance(outcome, SquadDataError):
            check_error(outcome, source)
        else:
            check_examples(*outcome, source, mode)
    # Strict mode raises exactly where the lenient one repairs or drops.
    if isinstance(lenient, SquadDataError):
        assert isinstance(strict, SquadDataError)
        return
    examples, report = lenient
    changed = set(report.repaired) | set(report.dropped)
    if not changed:
        assert not isinstance(strict, SquadDataError), strict
        assert strict[0] == examples
    else:
        assert isinstance(strict, SquadDataError)
        assert any(f"[{reason}]" in str(strict) for reason in changed), (str(strict), changed)


@_seeded
@settings(max_examples=FUZZ_CASES, **FUZZ_SETTINGS)
@given(data=structured_file(), config=configs, via_file=st.booleans())
def test_structured_files_are_read_or_refused_cleanly(data, config, via_file, scratch):
    """Mostly-valid SQuAD documents, mutated: FUZZ_CASES examples (1,500 by default)."""
    check_file(data, config, via_file, scratch)


@_seeded
@settings(max_examples=max(FUZZ_CASES // 3, 1), **FUZZ_SETTINGS)
@given(data=raw_file, config=configs, via_file=st.booleans())
def test_raw_bytes_are_read_or_refused_cleanly(data, config, via_file, scratch):
    """Raw bytes, JSON-token soup and deep nesting: FUZZ_CASES // 3 examples (500 by default)."""
    check_file(data, config, via_file, scratch)


# --- a fault is reported where it is ------------------------------------------------------------

PLAIN_NAMES = st.one_of(st.sampled_from(["Cats", "../../etc/x", "a/../../b", "O'Brien", "Σίσυφος", "x" * 150]),
                        st.text(ALPHABET, min_size=1, max_size=10), st.sampled_from(["line\nbreak", "nul\x00"]))
QUESTION_FAULTS = {
    # fault name -> (changes the question record in place, the modes where it is an error or None for all)
    "answers missing": (lambda qa: qa.pop("answers"), None),
    "answers not a list": (lambda qa: qa.update(answers={"text": "a"}), None),
    "answer not an object": (lambda qa: qa.update(answers=["a"]), None),
    "text not a string": (lambda qa: qa["answers"][0].update(text=3), None),
    "answer_start a float": (lambda qa: qa["answers"][0].update(answer_start=0.0), None),
    "answer_start a bool": (lambda qa: qa["answers"][0].update(answer_start=False), None),
    "answer_start missing": (lambda qa: qa["answers"][0].pop("answer_start"), None),
    "question not a string": (lambda qa: qa.update(question=["Who?"]), None),
    "question with a surrogate": (lambda qa: qa.update(question="Who\ud800?"), None),
    "answer with a surrogate": (lambda qa: qa["answers"][0].update(text="a\udfff"), None),
    "no answers in v1": (lambda qa: qa.update(answers=[]), "v1"),
    "is_impossible not a bool": (lambda qa: qa.update(is_impossible="yes"), "v2"),
    "impossible with answers": (lambda qa: qa.update(is_impossible=True), "v2"),
    "no answers, not impossible": (lambda qa: qa.update(answers=[], is_impossible=False), "v2"),
    "misaligned start": (lambda qa: qa["answers"][0].update(answer_start=qa["answers"][0]["answer_start"] + 1),
                         "strict"),
    "answer not in context": (lambda qa: qa["answers"][0].update(text="zzz"), "strict"),
    "empty question": (lambda qa: qa.update(question="  "), "strict"),
}
ARTICLE_FAULTS = {
    "paragraphs not a list": lambda article: article.update(paragraphs={}),
    "paragraph not an object": lambda article: article["paragraphs"].append("text"),
    "context not a string": lambda article: article["paragraphs"][0].update(context=None),
    "qas not a list": lambda article: article["paragraphs"][0].update(qas="q"),
    "context with a surrogate": lambda article: article["paragraphs"][0].update(context="ab\ud800"),
}


def shown(name: str) -> str:
    """How a message shows a title or id: 100 characters at most, unprintable ones escaped as Python writes them."""
    name = name if len(name) <= 100 else name[:100] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


@st.composite
def clean_document(draw):
    """(document, [(article index, title)], [(article index, paragraph index, question index, id)])."""
    titles = draw(st.lists(PLAIN_NAMES, min_size=1, max_size=3))
    articles, questions, counter = [], [], 0
    for a, title in enumerate(titles):
        paragraphs = []
        for p in range(draw(st.integers(1, 2))):
            context = "The cat sat on the mat " + draw(st.text(ALPHABET, max_size=20))
            qas = []
            for q in range(draw(st.integers(1, 3))):
                qid = draw(st.one_of(st.just(f"q{counter}"), PLAIN_NAMES.map(lambda s, n=counter: f"{s}#{n}")))
                counter += 1
                start = draw(st.integers(0, 19))
                qas.append({"id": qid, "question": "Who sat?",
                            "answers": [{"text": context[start:start + 3], "answer_start": start}]})
                questions.append((a, p, q, qid))
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": title, "paragraphs": paragraphs})
    return {"version": "1.1", "data": articles}, list(enumerate(titles)), questions


@_seeded
@settings(max_examples=max(FUZZ_CASES // 3, 1), **FUZZ_SETTINGS)
@given(case=clean_document(), data=st.data())
def test_a_fault_is_reported_with_its_article_and_question(case, data):
    """One fault in an otherwise clean file: the error names the article and the question (FUZZ_CASES // 3)."""
    doc, articles, questions = case
    examples, report = parse_squad(json.dumps(doc).encode(), "clean.json")
    assert report.kept == report.questions_in == len(questions)
    level = data.draw(st.sampled_from(["question", "question", "article", "id"]))
    if level == "question":
        name = data.draw(st.sampled_from(sorted(QUESTION_FAULTS)))
        fault, mode = QUESTION_FAULTS[name]
        a, p, q, qid = data.draw(st.sampled_from(questions))
        fault(doc["data"][a]["paragraphs"][p]["qas"][q])
        config = SquadReadConfig(version_2_with_negative=mode == "v2", strict=mode == "strict")
        where = f"(article '{shown(articles[a][1])}', question '{shown(qid)}')"
    elif level == "article":
        name = data.draw(st.sampled_from(sorted(ARTICLE_FAULTS)))
        a, title = data.draw(st.sampled_from(articles))
        ARTICLE_FAULTS[name](doc["data"][a])
        config = SquadReadConfig()
        where = f"(article '{shown(title)}')"
    else:
        name = data.draw(st.sampled_from(["missing", "float", "null", "list"]))
        a, p, q, _ = data.draw(st.sampled_from(questions))
        title = articles[a][1]
        qa = doc["data"][a]["paragraphs"][p]["qas"][q]
        qa.update(id={"missing": None, "float": 1.5, "null": None, "list": ["q"]}[name])
        if name == "missing":
            del qa["id"]
        config = SquadReadConfig()
        where = f"question 'Who sat?' has an 'id' that is missing or not a string (article '{shown(title)}')"
    with pytest.raises(SquadDataError) as info:
        parse_squad(json.dumps(doc).encode("utf-8", "surrogatepass"), "clean.json", config)
    message = str(info.value)
    check_error(info.value, "clean.json")
    assert where in message, (name, message)


# --- the faults this fuzzing found, kept as fixed cases --------------------------------------------


def squad(context: str, answer_text: str, start: int, **article) -> bytes:
    qa = {"id": "q", "question": "Who?", "answers": [{"text": answer_text, "answer_start": start}]}
    return json.dumps({"data": [{"title": "T", "paragraphs": [{"context": context, "qas": [qa]}], **article}]}).encode()


@pytest.mark.parametrize("data, problem", [
    (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    (b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (squad("The cat.", "cat", 4).replace(b'"answer_start": 4', b'"answer_start": ' + b"9" * 5000), "too long"),
    (squad("The cat \\ud800.", "cat", 4).replace(b"\\\\ud800", b"\\ud800"), "unpaired surrogate"),
    (codecs.BOM_UTF8 + b" \n", "the file is empty"),
])
def test_found_faults_are_squad_data_errors(data, problem):
    with pytest.raises(SquadDataError, match=problem) as info:
        parse_squad(data, "f.json")
    check_error(info.value, "f.json")


@pytest.mark.parametrize("document_id", [[1], {"a": 1}, True, None])
def test_unusable_document_ids_give_the_article_index_as_title(document_id):
    data = json.loads(squad("The cat.", "cat", 4))
    del data["data"][0]["title"]
    data["data"][0]["paragraphs"][0]["document_id"] = document_id
    examples, report = parse_squad(json.dumps(data).encode(), "f.json")
    assert examples[0].title == "article-0"
    assert report.repaired == {squad_io.TITLE_MISSING: 1}


@pytest.mark.parametrize("context, answer_text, start, expected", [
    ("a" * 1_000_000, "A", 999_999 // 2, 499_999),  # a million case-insensitive occurrences
    ("a" * 1_000_000, "a" * 2000 + "b", 0, None),  # an answer that almost occurs everywhere
    ("a" * 1_000_000, "a" * 10_000 + "b" + "a" * 10_000, 900_000, None),  # what makes str.rfind quadratic
    ("b" + "a" * 1_000_000, "B", 10**30, 0),
])
def test_a_misaligned_answer_in_a_1_mb_context_is_found_in_linear_time_and_memory(context, answer_text, start,
                                                                                   expected):
    data = squad(context, answer_text, start)
    tracemalloc.start()
    began = time.monotonic()
    try:
        if expected is None:
            with pytest.raises(SquadDataError, match="every question was dropped"):
                parse_squad(data, "f.json")
        else:
            examples, _ = parse_squad(data, "f.json")
            assert examples[0].answer_starts == (expected,)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Before: 2 s and 90 MB for the first case, 8 s for the second, minutes for the third.
    assert time.monotonic() - began < 2.0
    assert peak < 8 * len(data) + (2 << 20)


def test_messages_show_hostile_titles_and_ids_shortened_on_one_line():
    qa = {"id": "x\n" * 500, "question": "Who?", "answers": [{"text": "dog", "answer_start": 0}]}
    data = json.dumps({"data": [{"title": "T\r\nFAKE LOG LINE", "paragraphs": [{"context": "cat", "qas": [qa]}]}]})
    with pytest.raises(SquadDataError) as info:
        parse_squad(data.encode(), "f.json", SquadReadConfig(strict=True))
    message = str(info.value)
    check_error(info.value, "f.json")
    assert "(article 'T\\r\\nFAKE LOG LINE', question '" + "x\\n" * 50 + "...')" in message
