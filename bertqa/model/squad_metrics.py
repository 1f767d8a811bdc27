"""The official SQuAD metrics (EM and F1), written from the v1.1 and v2.0 evaluation scripts.

Scores must be comparable with published numbers, so every quirk of the official
`evaluate-v1.1.py` and `evaluate-v2.0.py` is kept: the same answer normalisation,
token F1 over `collections.Counter`s, the max over gold answers, v2's `['']` gold
for unanswerable questions and its best-threshold search with its tie behaviour.

Where the official scripts have no defined behaviour, this module chooses:
  * a question without a prediction scores 0 (v1.1 does this; v2.0 crashes with a
    KeyError), is counted in the totals and is logged; `missing_predictions` lists
    them. In the v2 best-threshold search it scores 0 at every threshold.
  * v2 `no_answer_probs` must cover every predicted question (v2.0 crashes too).

Pure Python, no TensorFlow, so that evaluation scripts stay light.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertqa.data.raw_example import SquadExample

_LOG = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse white space."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    # Articles become a space, not nothing, so "theory" survives and "a b" stays two words.
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_v1(prediction: str, gold: str) -> float:
    """v1.1's token F1: 0 when nothing is shared, even when both are empty."""
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    return _token_f1(prediction_tokens, gold_tokens)


def f1_v2(prediction: str, gold: str) -> float:
    """v2.0's token F1: a no-answer on either side scores 1 only if both are no-answer."""
    prediction_tokens = _tokens_v2(prediction)
    gold_tokens = _tokens_v2(gold)
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    return _token_f1(prediction_tokens, gold_tokens)


def _tokens_v2(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _max_over_gold(metric: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    return max(metric(prediction, gold) for gold in golds)


def missing_predictions(examples: Sequence[SquadExample], predictions: Mapping[str, str]) -> list[str]:
    """Ids of examples that have no prediction (they score 0)."""
    return [example.id for example in examples if example.id not in predictions]


def _require_examples(examples: Sequence[SquadExample]) -> None:
    if not examples:
        raise ValueError("No examples to evaluate.")


def _log_missing(examples: Sequence[SquadExample], predictions: Mapping[str, str]) -> None:
    missing = missing_predictions(examples, predictions)
    if missing:
        _LOG.warning(
            "%d of %d questions have no prediction and score 0 (first: %s).",
            len(missing),
            len(examples),
            missing[0],
        )


def squad_v1_metrics(examples: Sequence[SquadExample], predictions: Mapping[str, str]) -> dict[str, float]:
    """{'exact_match', 'f1'} on a 0-100 scale, as evaluate-v1.1.py computes them."""
    _require_examples(examples)
    _log_missing(examples, predictions)
    exact_total = f1_total = 0.0
    for example in examples:
        if not example.answer_texts or example.is_impossible:
            raise ValueError(
                f"Question {example.id!r} has no gold answer; use squad_v2_metrics for SQuAD 2.0 data."
            )
        if example.id not in predictions:
            continue
        prediction = predictions[example.id]
        exact_total += _max_over_gold(exact_match, prediction, example.answer_texts)
        f1_total += _max_over_gold(f1_v1, prediction, example.answer_texts)
    return {
        "exact_match": 100.0 * exact_total / len(examples),
        "f1": 100.0 * f1_total / len(examples),
    }


def gold_answers_v2(example: SquadExample) -> list[str]:
    """v2.0's gold list: answers that normalise to something, else [''] (no answer).

    An impossible question's `answer_texts` are its plausible answers, kept for
    training only: its gold is always [''].
    """
    if example.is_impossible:
        return [""]
    golds = [text for text in example.answer_texts if normalize_answer(text)]
    return golds or [""]


def squad_v2_metrics(
    examples: Sequence[SquadExample],
    predictions: Mapping[str, str],
    no_answer_probs: Mapping[str, float] | None = None,
    no_answer_threshold: float = 1.0,
) -> dict[str, float | int]:
    """The dict evaluate-v2.0.py prints, with its keys.

    exact, f1, total; HasAns_exact/f1/total if some question is answerable and
    NoAns_exact/f1/total if some is not (as in the official script, a group that is
    absent has no keys); best_exact, best_exact_thresh, best_f1, best_f1_thresh
    when `no_answer_probs` are given.
    """
    _require_examples(examples)
    _log_missing(examples, predictions)
    # Keyed by id like the official script: a repeated id is scored once.
    has_answer = {example.id: not example.is_impossible for example in examples}
    probs = _no_answer_probs(examples, predictions, no_answer_probs)
    exact_raw, f1_raw = _raw_scores_v2(examples, predictions)
    exact_final = _apply_no_answer_threshold(exact_raw, probs, has_answer, no_answer_threshold)
    f1_final = _apply_no_answer_threshold(f1_raw, probs, has_answer, no_answer_threshold)

    result: dict[str, float | int] = dict(_eval_dict(exact_final, f1_final, list(has_answer)))
    has_answer_ids = [qid for qid, has in has_answer.items() if has]
    no_answer_ids = [qid for qid, has in has_answer.items() if not has]
    for prefix, ids in (("HasAns", has_answer_ids), ("NoAns", no_answer_ids)):
        if ids:
            for key, value in _eval_dict(exact_final, f1_final, ids).items():
                result[f"{prefix}_{key}"] = value
    if no_answer_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = find_best_thresh(
            predictions, exact_raw, probs, has_answer
        )
        result["best_f1"], result["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, probs, has_answer)
    return result


def _no_answer_probs(
    examples: Sequence[SquadExample],
    predictions: Mapping[str, str],
    no_answer_probs: Mapping[str, float] | None,
) -> Mapping[str, float]:
    if no_answer_probs is None:
        # The official default: never above the default threshold of 1.0.
        return {qid: 0.0 for qid in predictions}
    absent = [e.id for e in examples if e.id in predictions and e.id not in no_answer_probs]
    if absent:
        raise ValueError(
            f"no_answer_probs lacks {len(absent)} predicted question(s), e.g. {absent[0]!r}; "
            "give a no-answer probability for every prediction."
        )
    # Only predicted questions can be turned into a no-answer: a missing one stays at 0.
    return {qid: prob for qid, prob in no_answer_probs.items() if qid in predictions}


def _raw_scores_v2(
    examples: Sequence[SquadExample], predictions: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per question EM and F1 before the no-answer threshold; 0 for a missing prediction."""
    exact_scores: dict[str, float] = {}
    f1_scores: dict[str, float] = {}
    for example in examples:
        if example.id not in predictions:
            exact_scores[example.id] = f1_scores[example.id] = 0.0
            continue
        golds = gold_answers_v2(example)
        prediction = predictions[example.id]
        exact_scores[example.id] = float(max(int(exact_match(prediction, gold)) for gold in golds))
        f1_scores[example.id] = _max_over_gold(f1_v2, prediction, golds)
    return exact_scores, f1_scores


def _apply_no_answer_threshold(
    scores: Mapping[str, float],
    probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
    threshold: float,
) -> dict[str, float]:
    """Above the threshold the question counts as answered 'no answer', whatever its text."""
    new_scores = {}
    for qid, score in scores.items():
        if qid in probs and probs[qid] > threshold:
            new_scores[qid] = float(not has_answer[qid])
        else:
            new_scores[qid] = score
    return new_scores


def _eval_dict(
    exact: Mapping[str, float], f1: Mapping[str, float], ids: Sequence[str]
) -> dict[str, float | int]:
    total = len(ids)
    return {
        "exact": 100.0 * sum(exact[qid] for qid in ids) / total,
        "f1": 100.0 * sum(f1[qid] for qid in ids) / total,
        "total": total,
    }


def find_best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    no_answer_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """The official sweep: (best score on 0-100, the no-answer probability reaching it).

    Start with every question answered 'no answer' (each unanswerable one right),
    then, in increasing order of no-answer probability (ties in the mapping's
    order), answer one more question: gain its score if answerable, lose 1 if it is
    unanswerable and the prediction is not empty. Only a strictly better score
    moves the threshold, so the lowest probability reaching the best score wins;
    the threshold starts at 0.0.
    """
    # Missing predictions (absent from `predictions`) score 0 at every threshold, so
    # they are out of the sweep but still in the denominator.
    swept = [qid for qid in no_answer_probs if qid in scores and qid in predictions]
    score = sum(1 for qid in swept if not has_answer[qid])
    best_score = score
    best_thresh = 0.0
    for qid in sorted(swept, key=lambda k: no_answer_probs[k]):
        if has_answer[qid]:
            score += scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best_score:
            best_score = score
            best_thresh = no_answer_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh
