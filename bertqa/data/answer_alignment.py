"""Answers located in their context: the offsets a SQuAD file gives, checked and repaired.

An answer whose `answer_start` does not point at its text is moved to the nearest occurrence
(case-insensitive, one character folded for one so that every offset stays valid); an answer
not in the context, or empty, is removed. Each repair and removal has a reason, which
bertqa.data.squad_io counts in its DataReport.
"""

from __future__ import annotations

import dataclasses
import functools

# Repair reasons (bertqa.data.squad_io lists every reason with its description).
ANSWER_START_MISALIGNED = "answer_start_misaligned"
ANSWER_TEXT_CASE_MISMATCH = "answer_text_case_mismatch"
ANSWER_NOT_IN_CONTEXT_REMOVED = "answer_not_in_context_removed"
EMPTY_ANSWER_REMOVED = "empty_answer_removed"

# Drop reasons: no answer is left.
ANSWER_NOT_IN_CONTEXT = "answer_not_in_context"
EMPTY_ANSWER_TEXT = "empty_answer_text"


@dataclasses.dataclass(frozen=True)
class AlignedAnswers:
    """The answers found in their context, with the repairs that took."""

    texts: tuple[str, ...]
    starts: tuple[int, ...]
    repairs: frozenset[str]
    # Why nothing is left, when every given answer was removed.
    empty_reason: str | None = None


class Context:
    """A paragraph's context and the folded forms `locate` searches, made at its first misaligned
    answer and kept for the paragraph's other questions."""

    def __init__(self, text: str):
        self.text = text

    @functools.cached_property
    def folded(self) -> str:
        return fold(self.text)

    @functools.cached_property
    def folded_reversed(self) -> str:
        return self.folded[::-1]


def fold(text: str) -> str:
    """Lower case, one character for one, so that an offset into the result is one into `text`."""
    # One character lowers to two, 'İ' (U+0130) -> 'i̇' (Unicode 13); it stays as it is.
    folded = "\u0130".join(part.lower() for part in text.split("\u0130"))
    if len(folded) != len(text):
        # A later Unicode with another such character: the same, one character at a time (slower).
        folded = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    # str.lower writes 'Σ' as 'ς' at the end of a word and 'σ' elsewhere: one letter either way.
    return folded.replace("ς", "σ")


def align_answers(context: Context, raw: list[tuple[str, int]]) -> AlignedAnswers:
    """Keeps the answers found in the context, each with an offset that points at it."""
    texts: list[str] = []
    starts: list[int] = []
    repairs: set[str] = set()
    empty = missing = 0
    for text, start in raw:
        if not text:
            # An empty string "occurs" everywhere, so it would label nothing.
            empty += 1
            continue
        found = locate(context, text, start)
        if found is None:
            missing += 1
            continue
        found_start, found_text = found
        if found_start != start:
            repairs.add(ANSWER_START_MISALIGNED)
        if found_text != text:
            repairs.add(ANSWER_TEXT_CASE_MISMATCH)
        texts.append(found_text)
        starts.append(found_start)
    empty_reason = None
    if not texts:
        empty_reason = EMPTY_ANSWER_TEXT if empty and not missing else ANSWER_NOT_IN_CONTEXT
    else:
        if missing:
            repairs.add(ANSWER_NOT_IN_CONTEXT_REMOVED)
        if empty:
            repairs.add(EMPTY_ANSWER_REMOVED)
    return AlignedAnswers(tuple(texts), tuple(starts), frozenset(repairs), empty_reason)


def locate(context: Context, text: str, start: int) -> tuple[int, str] | None:
    """The (start, text as written in the context) of the answer, or None if absent.

    A correct offset is taken as is. Otherwise the nearest case-insensitive
    occurrence wins; on equal distance an exact-case one, then the earlier one.
    """
    if start >= 0 and context.text.startswith(text, start):
        return start, text
    # The nearest occurrence is the first one at or after `start` or the last one
    # before it, so two searches find it, never a list of every occurrence (a 1 MB
    # context of "a" has a million). str.find is linear in the context's length
    # (two-way search), str.rfind is not (an answer of 10,000 characters takes
    # seconds in 1 MB), so the one before is the first one after in the reversed
    # context. The 1:1 folding keeps every offset valid in the original context.
    size, needle = len(text), fold(text)
    candidates = []
    after = context.folded.find(needle, max(start, 0))
    if after >= 0:
        candidates.append(after)
    if start > 0:
        # Ends at or before start - 1 + size in the context, i.e. begins at or after this in the reversed one.
        reversed_from = max(len(context.text) - (start - 1) - size, 0)
        found = context.folded_reversed.find(needle[::-1], reversed_from)
        if found >= 0:
            candidates.append(len(context.text) - found - size)
    if not candidates:
        return None
    best = min(candidates, key=lambda c: (abs(c - start), context.text[c:c + size] != text, c))
    return best, context.text[best:best + size]
