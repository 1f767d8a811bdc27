"""Start/end logits of the model's windows to answer texts, n-best lists and no-answer odds.

Follows the reference SQuAD post-processing (TF Model Garden `squad_lib`, Google's
BERT `run_squad.py`, Hugging Face `utils_qa.py`) in plain numpy:

  * per window, pair the top `n_best_size` start and end positions and keep valid
    spans (the filters are commented in `_window_spans`);
  * merge the spans of all windows of an example, best first by start+end logit,
    keep `n_best_size` of them with distinct texts (as squad_lib does), and give
    them softmax probabilities;
  * SQuAD 2.0: the null score is the smallest `start[0] + end[0]` ([CLS]) over the
    example's windows; `score_diff = null - best non-null span score`, and the
    answer is '' when `score_diff > null_score_diff_threshold`.

Answer text is cut from the original context by character offsets, so case,
accents and spacing come out as written. Where the references answer the nonce
text "empty" (an example with no valid span), this module answers '' in both
v1.1 and v2.0, which the metrics score as a wrong answer (v1.1) or a no-answer
(v2.0); its null odds are then `null - 0`, as in the references.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import tensorflow as tf

from bertqa.data.raw_example import SquadExample

PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"


class WindowLike(Protocol):
    """What post-processing needs from a window (bertqa.data.windowing makes them)."""

    @property
    def example_id(self) -> str: ...

    @property
    def token_char_starts(self) -> Sequence[int]: ...

    @property
    def token_char_ends(self) -> Sequence[int]: ...

    @property
    def token_is_max_context(self) -> Sequence[int]: ...


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    n_best_size: int = 20
    max_answer_length: int = 30  # in tokens
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    # Widen each answer to the whole words it cuts into, as the Task Library's BertQuestionAnswerer
    # shows answers (it maps tokens back to whitespace-split words), so that an app does not show
    # "ntal" for a span that starts inside "coincidental". Off for the SQuAD metric: the official
    # evaluation scores the span the model chose.
    whole_words: bool = False

    def __post_init__(self):
        if self.n_best_size < 1 or self.max_answer_length < 1:
            raise ValueError(
                f"n_best_size ({self.n_best_size}) and max_answer_length ({self.max_answer_length}) "
                "must be at least 1."
            )


@dataclasses.dataclass(frozen=True)
class Predictions:
    """answers: id -> text; nbest: id -> [{text, probability, start_logit, end_logit, start_char, end_char}]
    (context[start_char:end_char] == text; -1 for the null answer);
    null_odds: id -> null score minus best span score (SQuAD 2.0 only, else empty)."""

    answers: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float]


@dataclasses.dataclass(frozen=True)
class _Span:
    text: str
    start_logit: float
    end_logit: float
    start_char: int = -1  # context[start_char:end_char] == text; -1 for the null answer
    end_char: int = -1

    @property
    def score(self) -> float:
        return self.start_logit + self.end_logit


@dataclasses.dataclass(frozen=True)
class _ScoredWindow:
    window: WindowLike
    start_logits: np.ndarray  # cut to the window's length
    end_logits: np.ndarray


def compute_predictions(
    examples: Sequence[SquadExample],
    windows: Sequence[WindowLike],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    config: PostprocessConfig = PostprocessConfig(),
) -> Predictions:
    """Answers for `examples` from the logits of `windows` (start_logits[i] belongs to windows[i])."""
    if not len(windows) == len(start_logits) == len(end_logits):
        raise ValueError(
            f"Got {len(windows)} windows but {len(start_logits)} start and {len(end_logits)} end logit rows; "
            "give one row of each per window."
        )
    by_example = _group_windows(examples, windows, start_logits, end_logits)
    answers: dict[str, str] = {}
    nbest: dict[str, list[dict]] = {}
    null_odds: dict[str, float] = {}
    for example in examples:
        answer, entries, odds = _predict_example(example, by_example[example.id], config)
        answers[example.id] = answer
        nbest[example.id] = entries
        if odds is not None:
            null_odds[example.id] = odds
    return Predictions(answers=answers, nbest=nbest, null_odds=null_odds)


def _group_windows(
    examples: Sequence[SquadExample],
    windows: Sequence[WindowLike],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
) -> dict[str, list[_ScoredWindow]]:
    by_example: dict[str, list[_ScoredWindow]] = collections.defaultdict(list)
    known = {example.id for example in examples}
    for window, starts, ends in zip(windows, start_logits, end_logits, strict=True):
        if window.example_id not in known:
            raise ValueError(
                f"A window belongs to example {window.example_id!r}, which is not among the examples."
            )
        by_example[window.example_id].append(_score_window(window, starts, ends))
    lacking = [example.id for example in examples if example.id not in by_example]
    if lacking:
        raise ValueError(
            f"{len(lacking)} example(s) have no window, e.g. {lacking[0]!r}; each needs at least one."
        )
    return by_example


def _score_window(window: WindowLike, starts: np.ndarray, ends: np.ndarray) -> _ScoredWindow:
    length = len(window.token_char_starts)
    if not length == len(window.token_char_ends) == len(window.token_is_max_context):
        raise ValueError(
            f"A window of example {window.example_id!r} has token_char_starts, token_char_ends and "
            "token_is_max_context of different lengths."
        )
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1)
    if len(starts) < length or len(ends) < length:
        raise ValueError(
            f"A window of example {window.example_id!r} has {length} tokens but only "
            f"{min(len(starts), len(ends))} logits."
        )
    # Positions past the window's tokens are padding: they must not even compete for the top n.
    return _ScoredWindow(window, starts[:length], ends[:length])


def _top_indices(logits: np.ndarray, n: int) -> list[int]:
    """The n largest positions, the earlier first on equal logits (as squad_lib's stable sort)."""
    return np.argsort(-logits, kind="stable")[:n].tolist()


def _window_spans(context: str, scored: _ScoredWindow, config: PostprocessConfig) -> list[_Span]:
    window = scored.window
    char_starts = window.token_char_starts
    char_ends = window.token_char_ends
    spans = []
    for s in _top_indices(scored.start_logits, config.n_best_size):
        for e in _top_indices(scored.end_logits, config.n_best_size):
            # [CLS], question and [SEP] tokens have no place in the context.
            if char_starts[s] < 0 or char_ends[e] < 0:
                continue
            # A token seen by several windows is scored only where it has the most
            # context on both sides, so overlapping windows do not double-count it.
            if not window.token_is_max_context[s]:
                continue
            if e < s:
                continue
            if e - s + 1 > config.max_answer_length:
                continue
            # Could only happen with odd offsets; an empty span would pose as the null answer.
            if char_ends[e] <= char_starts[s]:
                continue
            start, end = char_starts[s], char_ends[e]
            if config.whole_words:
                start, end = _word_bounds(context, start, end)
            text = context[start:end]
            spans.append(_Span(text, float(scored.start_logits[s]), float(scored.end_logits[e]), start, end))
    return spans


def _word_bounds(context: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened over the letters and digits around it: to the whole words it cuts into, without
    the punctuation next to them (the Task Library would also keep that; the SQuAD metric ignores it)."""
    while start > 0 and context[start - 1].isalnum() and context[start].isalnum():
        start -= 1
    while end < len(context) and context[end].isalnum() and context[end - 1].isalnum():
        end += 1
    return start, end


def _null_span(scored_windows: Sequence[_ScoredWindow]) -> _Span:
    """The least confident no-answer over windows: min of start[0] + end[0] ([CLS])."""
    nulls = [_Span("", float(w.start_logits[0]), float(w.end_logits[0])) for w in scored_windows]
    return min(nulls, key=lambda span: span.score)


def _nbest(candidates: list[_Span], n_best_size: int) -> list[_Span]:
    """Best first, distinct texts only: the same words found twice are one answer."""
    ordered = sorted(candidates, key=lambda span: span.score, reverse=True)
    best: list[_Span] = []
    seen: set[str] = set()
    for span in ordered:
        if len(best) >= n_best_size:
            break
        if span.text in seen:
            continue
        seen.add(span.text)
        best.append(span)
    return best


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    values = np.asarray(scores, dtype=np.float64)
    exp = np.exp(values - values.max())
    return (exp / exp.sum()).tolist()


def _predict_example(
    example: SquadExample, scored_windows: Sequence[_ScoredWindow], config: PostprocessConfig
) -> tuple[str, list[dict], float | None]:
    candidates = [span for w in scored_windows for span in _window_spans(example.context, w, config)]
    null = _null_span(scored_windows) if config.version_2_with_negative else None
    if null is not None:
        candidates.append(null)
    best = _nbest(candidates, config.n_best_size)
    # The null answer is always offered in v2, even when n_best_size spans beat it.
    if null is not None and all(span.text for span in best):
        best.append(null)
    entries = [
        {"text": span.text, "probability": prob, "start_logit": span.start_logit, "end_logit": span.end_logit,
         "start_char": span.start_char, "end_char": span.end_char}
        for span, prob in zip(best, _softmax([span.score for span in best]), strict=True)
    ]
    best_non_null = next((span for span in best if span.text), None)
    answer = best_non_null.text if best_non_null is not None else ""
    if null is None:
        return answer, entries, None
    # With no span at all, the references compare against a nonce answer with logits 0.
    best_score = best_non_null.score if best_non_null is not None else 0.0
    score_diff = null.score - best_score
    if score_diff > config.null_score_diff_threshold:
        answer = ""
    return answer, entries, float(score_diff)


def write_prediction_files(
    predictions: Predictions, output_dir: str, version_2_with_negative: bool
) -> list[str]:
    """Writes predictions.json, nbest_predictions.json and, for v2, null_odds.json.

    The formats are those of the reference scripts, which the official evaluators
    read: {id: text}, {id: [{text, probability, start_logit, end_logit}]},
    {id: score_diff}. Returns the paths written; works on any tf.io.gfile path.
    """
    tf.io.gfile.makedirs(output_dir)
    # The character offsets stay in memory (apps highlight with them): the file keeps the reference format.
    official = ("text", "probability", "start_logit", "end_logit")
    nbest = {qid: [{key: entry[key] for key in official} for entry in entries]
             for qid, entries in predictions.nbest.items()}
    contents = {PREDICTIONS_FILE: predictions.answers, NBEST_FILE: nbest}
    if version_2_with_negative:
        contents[NULL_ODDS_FILE] = predictions.null_odds
    paths = []
    for name, obj in contents.items():
        path = os.path.join(output_dir, name)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(obj, indent=4) + "\n")
        paths.append(path)
    return paths
