"""Tests for bertqa.model.squad_metrics, with every expected number worked out by hand."""

from __future__ import annotations

import pytest

from bertqa.data.raw_example import SquadExample
from bertqa.model.squad_metrics import (
    f1_v1,
    f1_v2,
    find_best_thresh,
    missing_predictions,
    normalize_answer,
    squad_v1_metrics,
    squad_v2_metrics,
)


def example(qid: str, *answers: str, impossible: bool = False) -> SquadExample:
    return SquadExample(
        id=qid,
        title="t",
        context="c",
        question="q",
        answer_texts=tuple(answers),
        answer_starts=tuple(0 for _ in answers),
        is_impossible=impossible,
    )


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("The  Quick, brown FOX!", "quick brown fox"),  # case, punctuation, article, spaces
        ("an apple a day", "apple day"),  # all three articles, whole words only
        ("theory anatomy", "theory anatomy"),  # articles inside words stay
        ("A.B", "ab"),  # punctuation goes first, so "a.b" is the word "ab", not an article
        ("  tab\tand\nnewline ", "tab and newline"),
        ("café—«the» 5%", "café—« » 5"),  # only ASCII punctuation is removed
        ("", ""),
    ],
)
def test_normalize_answer_matches_the_official_steps(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_token_f1_counts_repeated_tokens_once_per_match():
    # pred [cat, cat, cat] vs gold [cat, cat]: 2 shared, P = 2/3, R = 1, F1 = 2PR/(P+R) = 0.8
    assert f1_v1("the cat cat cat", "cat cat") == pytest.approx(0.8)


def test_empty_strings_differ_between_v1_and_v2_f1():
    # v1: nothing shared -> 0 even when both are empty; v2: both no-answer -> 1.
    assert f1_v1("", "the") == 0.0
    assert f1_v2("", "") == 1.0
    assert f1_v2("", "x") == 0.0


def test_v1_takes_max_over_gold_answers_and_scores_missing_as_zero():
    examples = [
        example("q1", "Denver Broncos", "the Denver Broncos", "Broncos"),
        example("q2", "1998"),
        example("q3", "the cat"),
        example("q4", "blue"),
    ]
    predictions = {"q1": "Broncos win", "q2": "in 1998.", "q3": "Cat!"}
    # q1: EM 0; F1 vs "Broncos": P=1/2, R=1 -> 2/3 (vs "Denver Broncos": 1/2), max 2/3
    # q2: "in 1998" vs "1998": EM 0, P=1/2, R=1 -> 2/3
    # q3: "cat" == "cat": EM 1, F1 1
    # q4: missing -> 0, 0
    # EM = 100 * 1/4 = 25; F1 = 100 * (2/3 + 2/3 + 1 + 0)/4 = 100 * 7/12
    assert squad_v1_metrics(examples, predictions) == {
        "exact_match": pytest.approx(25.0),
        "f1": pytest.approx(100 * 7 / 12),
    }
    assert missing_predictions(examples, predictions) == ["q4"]


def test_v1_empty_prediction_matches_a_gold_that_normalises_to_nothing():
    # normalize("") == normalize("The") == "": EM 1; v1 F1 shares no token: 0.
    assert squad_v1_metrics([example("q", "The")], {"q": ""}) == {"exact_match": 100.0, "f1": 0.0}


def test_v1_rejects_questions_without_gold_answers():
    with pytest.raises(ValueError, match="squad_v2_metrics"):
        squad_v1_metrics([example("q", "x", impossible=True)], {"q": ""})


V2_EXAMPLES = [
    example("a", "Paris"),
    example("b", "blue whale"),
    example("c", "plausible", impossible=True),
    example("d", impossible=True),
]
V2_PREDICTIONS = {"a": "Paris", "b": "whale", "c": "", "d": "London"}


def test_v2_scores_unanswerable_questions_against_the_empty_answer():
    # a: EM 1, F1 1; b: EM 0, F1 P=1 R=1/2 -> 2/3; c: '' vs [''] (plausible ignored) EM 1 F1 1;
    # d: 'London' vs [''] EM 0 F1 0.
    # exact = 100*(1+0+1+0)/4 = 50; f1 = 100*(1 + 2/3 + 1 + 0)/4 = 100*2/3
    # HasAns: exact 100*1/2 = 50, f1 100*(5/3)/2; NoAns: exact 50, f1 50
    assert squad_v2_metrics(V2_EXAMPLES, V2_PREDICTIONS) == {
        "exact": pytest.approx(50.0),
        "f1": pytest.approx(100 * 2 / 3),
        "total": 4,
        "HasAns_exact": pytest.approx(50.0),
        "HasAns_f1": pytest.approx(100 * 5 / 6),
        "HasAns_total": 2,
        "NoAns_exact": pytest.approx(50.0),
        "NoAns_f1": pytest.approx(50.0),
        "NoAns_total": 2,
    }


def test_v2_threshold_and_best_threshold_search():
    probs = {"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.95}
    result = squad_v2_metrics(V2_EXAMPLES, V2_PREDICTIONS, probs, no_answer_threshold=0.85)
    # Above 0.85: b becomes no-answer (answerable -> 0), d becomes no-answer (correct -> 1).
    # exact = f1 = 100*(1 + 0 + 1 + 1)/4 = 75
    assert result["exact"] == pytest.approx(75.0)
    assert result["f1"] == pytest.approx(75.0)
    # Sweep in order a(.1) c(.8) b(.9) d(.95), starting at 2 (c and d unanswerable):
    #   exact: a +1 -> 3 (best, thresh .1); c +0; b +0; d -1 -> best 3/4 = 75 at 0.1
    #   f1:    a +1 -> 3 (thresh .1); c +0; b +2/3 -> 11/3 (best, thresh .9); d -1
    assert result["best_exact"] == pytest.approx(75.0)
    assert result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(100 * 11 / 12)
    assert result["best_f1_thresh"] == 0.9


def test_best_threshold_keeps_the_first_threshold_on_equal_scores():
    # x answerable and wrong (+0), y unanswerable with '' (+0): start 1, never strictly
    # better, so the threshold stays at its initial 0.0 and the score is 1/2.
    scores = {"x": 0.0, "y": 1.0}
    result = find_best_thresh({"x": "no", "y": ""}, scores, {"x": 0.2, "y": 0.7}, {"x": True, "y": False})
    assert result == (50.0, 0.0)


def test_best_threshold_ties_in_probability_follow_the_mapping_order():
    # p: unanswerable, predicted text (-1); q: answerable, right (+1); both at 0.5. Start 1.
    has_answer = {"p": False, "q": True}
    predictions = {"p": "text", "q": "right"}
    scores = {"p": 0.0, "q": 1.0}
    # p first: 1 - 1 = 0, then 0 + 1 = 1, never above 1 -> 1/2 at 0.0.
    assert find_best_thresh(predictions, scores, {"p": 0.5, "q": 0.5}, has_answer) == (50.0, 0.0)
    # q first: 1 + 1 = 2 (best, thresh 0.5), then 2 - 1 = 1 -> 2/2 at 0.5, the official
    # quirk: no real threshold gives 100 here.
    assert find_best_thresh(predictions, scores, {"q": 0.5, "p": 0.5}, has_answer) == (100.0, 0.5)


def test_v2_answerable_question_whose_gold_normalises_to_nothing_accepts_empty():
    # gold "The" normalises to "", so the gold list becomes [''] and '' is right.
    result = squad_v2_metrics([example("q", "The")], {"q": ""})
    assert (result["exact"], result["f1"], result["HasAns_total"]) == (100.0, 100.0, 1)
    assert "NoAns_total" not in result


def test_v2_missing_prediction_scores_zero_and_stays_in_the_total():
    # a right (1), d missing (0): exact = 100*1/2 = 50; d's 0.99 cannot make it a no-answer.
    result = squad_v2_metrics(V2_EXAMPLES[::3], {"a": "Paris"}, {"a": 0.3, "d": 0.99}, 0.5)
    assert (result["exact"], result["total"], result["NoAns_exact"]) == (50.0, 2, 0.0)
    # The sweep covers a only and starts at 0 (d is out): a +1 -> 1 at 0.3; 100*1/2 = 50.
    assert (result["best_exact"], result["best_exact_thresh"]) == (50.0, 0.3)
    assert missing_predictions(V2_EXAMPLES[::3], {"a": "Paris"}) == ["d"]


def test_v2_requires_a_no_answer_probability_for_every_prediction():
    with pytest.raises(ValueError, match="no_answer_probs lacks 1"):
        squad_v2_metrics(V2_EXAMPLES, V2_PREDICTIONS, {"a": 0.1, "b": 0.2, "c": 0.3})


def test_metrics_reject_an_empty_example_list():
    with pytest.raises(ValueError, match="No examples"):
        squad_v1_metrics([], {})
