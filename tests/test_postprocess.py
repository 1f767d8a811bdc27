"""Tests for bertqa.model.postprocess on hand-made windows over a tiny context."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib

import numpy as np
import pytest

from bertqa.data.raw_example import SquadExample
from bertqa.model.postprocess import PostprocessConfig, Predictions, compute_predictions, write_prediction_files

CONTEXT = "Émile ZOLA wrote Nana in Paris"
# Context tokens as (start, end) char offsets: Émile, zo, ##la, wrote, nana, in, paris.
TOKENS = [(0, 5), (6, 8), (8, 10), (11, 16), (17, 21), (22, 24), (25, 30)]
EXAMPLE = SquadExample(id="q1", title="t", context=CONTEXT, question="Who?")


@dataclasses.dataclass(frozen=True)
class Window:
    example_id: str
    token_char_starts: tuple[int, ...]
    token_char_ends: tuple[int, ...]
    token_is_max_context: tuple[int, ...]


def window(token_ids: list[int], max_context: set[int], example_id: str = "q1") -> Window:
    """[CLS] who [SEP] <context tokens> [SEP]: the context starts at position 3."""
    return Window(
        example_id,
        (-1, -1, -1) + tuple(TOKENS[t][0] for t in token_ids) + (-1,),
        (-1, -1, -1) + tuple(TOKENS[t][1] for t in token_ids) + (-1,),
        (0, 0, 0) + tuple(int(t in max_context) for t in token_ids) + (0,),
    )


# Two overlapping windows. "wrote" (t3) has more context in A (3 left, 1 right) than
# in B (0 left); "nana" (t4) more in B (1 left, 2 right) than in A (0 right).
WINDOW_A = window([0, 1, 2, 3, 4], max_context={0, 1, 2, 3})  # positions 3..7 = t0..t4
WINDOW_B = window([3, 4, 5, 6], max_context={4, 5, 6})  # positions 3..6 = t3..t6


def logits(length: int, peaks: dict[int, float] | None = None) -> np.ndarray:
    values = np.zeros(length, dtype=np.float32)
    for position, value in (peaks or {}).items():
        values[position] = value
    return values


V1 = PostprocessConfig()


def predict(a_start: dict, a_end: dict, b_start=None, b_end=None, config=V1, pad: int = 0) -> Predictions:
    return compute_predictions(
        [EXAMPLE],
        [WINDOW_A, WINDOW_B],
        [logits(9 + pad, a_start), logits(8 + pad, b_start)],
        [logits(9 + pad, a_end), logits(8 + pad, b_end)],
        config,
    )


def test_answer_is_cut_from_the_context_by_char_offsets():
    # Start at "Émile" (pos 3), end at "##la" (pos 5): chars 0..10 keep accent and case.
    predictions = predict({3: 5.0}, {5: 5.0})
    assert predictions.answers == {"q1": "Émile ZOLA"}
    assert predictions.nbest["q1"][0]["text"] == "Émile ZOLA"


def test_every_nbest_answer_says_where_it_lies_in_the_context():
    # "wrote" (t3) in window A and "paris" (t6) in window B; with whole words, "zo" (t1) widens to "ZOLA".
    predictions = predict({6: 4.0}, {6: 4.0}, {6: 3.0}, {6: 3.0})
    for entry in predictions.nbest["q1"]:
        if entry["text"]:
            assert CONTEXT[entry["start_char"]:entry["end_char"]] == entry["text"]
    assert (predictions.nbest["q1"][0]["start_char"], predictions.nbest["q1"][0]["end_char"]) == (11, 16)
    widened = predict({4: 5.0}, {4: 5.0}, config=dataclasses.replace(V1, whole_words=True)).nbest["q1"][0]
    assert (widened["text"], widened["start_char"], widened["end_char"]) == ("ZOLA", 6, 10)


def test_a_span_may_end_inside_a_word():
    # Start at "zo" (pos 4), end at "zo": chars 6..8 of "ZOLA".
    assert predict({4: 5.0}, {4: 5.0}).answers["q1"] == "ZO"


def test_whole_words_widens_a_span_inside_a_word_to_the_word_as_the_task_library_shows_it():
    whole = dataclasses.replace(V1, whole_words=True)
    assert predict({4: 5.0}, {4: 5.0}, config=whole).answers["q1"] == "ZOLA"
    # A span already on word boundaries is unchanged.
    assert predict({3: 5.0}, {5: 5.0}, config=whole).answers["q1"] == "Émile ZOLA"


def test_word_bounds_widen_over_letters_and_digits_only():
    from bertqa.model.postprocess import _word_bounds

    context = "It was coincidental, in 1889."
    start = context.index("ntal")
    assert context[slice(*_word_bounds(context, start, start + 4))] == "coincidental"
    assert context[slice(*_word_bounds(context, context.index("88"), context.index("88") + 2))] == "1889"
    assert _word_bounds(context, 0, 2) == (0, 2)  # "It": a whole word already
    comma = context.index(",")
    assert _word_bounds(context, comma - 4, comma) == (context.index("coincidental"), comma)  # the comma stays out


def test_span_starting_where_the_token_lacks_max_context_is_skipped():
    # A scores "nana" (pos 7 of A) 10+10, but nana has max context in B, where
    # "Nana in" (pos 4..5 of B) scores 6+6. A's best allowed span, e.g. "Émile ... Nana"
    # (pos 3..7), scores 0+10, so B's span wins.
    predictions = predict({7: 10.0}, {7: 10.0}, {4: 6.0}, {5: 6.0})
    assert predictions.answers["q1"] == "Nana in"
    assert all(entry["start_logit"] != 10.0 for entry in predictions.nbest["q1"])


def test_span_may_end_on_a_token_without_max_context():
    # "wrote" (pos 6 of A) is max-context in A; the end "nana" (pos 7) need not be.
    assert predict({6: 4.0}, {7: 4.0}).answers["q1"] == "wrote Nana"


@pytest.mark.parametrize("max_answer_length, answer", [(3, "Émile ZOLA"), (2, "Émile ZO")])
def test_spans_longer_than_max_answer_length_are_skipped(max_answer_length, answer):
    # "Émile ZOLA" is 3 tokens (pos 3..5, score 10); "Émile ZO" 2 tokens (pos 3..4, score 9).
    config = PostprocessConfig(max_answer_length=max_answer_length)
    assert predict({3: 5.0}, {5: 5.0, 4: 4.0}, config=config).answers["q1"] == answer


def test_padded_logit_positions_are_ignored():
    # Padding (pos 10) has the largest logits; with n_best_size=1 it would take the only
    # slot and leave no valid span if it were not cut off first.
    pad = {10: 100.0}
    predictions = predict({3: 5.0, **pad}, {5: 5.0, **pad}, pad, pad, PostprocessConfig(n_best_size=1), pad=4)
    assert predictions.answers["q1"] == "Émile ZOLA"


def test_nbest_probabilities_are_a_softmax_over_the_nbest_scores():
    example = SquadExample(id="s", title="t", context="Hi yo", question="?")
    tiny = Window("s", (-1, 0, 3), (-1, 2, 5), (0, 1, 1))
    start, end = np.array([0.0, 2.0, 1.0]), np.array([0.0, 1.0, 3.0])
    predictions = compute_predictions([example], [tiny], [start], [end], PostprocessConfig(n_best_size=2))
    # Top-2 starts {1, 2}, ends {2, 1}: (1,2) "Hi yo" 2+3=5, (2,2) "yo" 1+3=4, (1,1) "Hi" 2+1=3,
    # (2,1) ends before it starts. Keep 2: softmax(5, 4) = (e/(e+1), 1/(e+1)).
    assert predictions.nbest["s"] == [
        {
            "text": "Hi yo",
            "probability": pytest.approx(math.e / (math.e + 1)),
            "start_logit": 2.0,
            "end_logit": 3.0,
            "start_char": 0,
            "end_char": 5,
        },
        {"text": "yo", "probability": pytest.approx(1 / (math.e + 1)), "start_logit": 1.0, "end_logit": 3.0,
         "start_char": 3, "end_char": 5},
    ]
    assert predictions.answers == {"s": "Hi yo"}
    assert predictions.null_odds == {}


def test_nbest_keeps_one_entry_per_text():
    # Word-level offsets: both wordpieces of ZOLA span chars 6..10, so three token
    # spans all read "ZOLA"; only the best (pos 1..2, 3+2) stays.
    word_level = Window("q1", (-1, 6, 6), (-1, 10, 10), (0, 1, 1))
    start, end = np.array([0.0, 3.0, 1.0]), np.array([0.0, 1.0, 2.0])
    predictions = compute_predictions([EXAMPLE], [word_level], [start], [end])
    assert [(e["text"], e["start_logit"], e["end_logit"]) for e in predictions.nbest["q1"]] == [
        ("ZOLA", 3.0, 2.0)
    ]
    assert predictions.nbest["q1"][0]["probability"] == pytest.approx(1.0)


def v2_predict(threshold: float) -> Predictions:
    # Null scores: A 3+3 = 6, B 1+1 = 2, so the null score is min = 2.
    # Best span "Émile" (A pos 3): 1.5+1.0 = 2.5; score_diff = 2 - 2.5 = -0.5.
    config = PostprocessConfig(version_2_with_negative=True, null_score_diff_threshold=threshold)
    return predict({0: 3.0, 3: 1.5}, {0: 3.0, 3: 1.0}, {0: 1.0}, {0: 1.0}, config)


def test_v2_answers_the_span_when_score_diff_is_not_above_the_threshold():
    predictions = v2_predict(threshold=0.0)
    assert predictions.answers == {"q1": "Émile"}
    assert predictions.null_odds == {"q1": pytest.approx(-0.5)}
    null_entries = [e for e in predictions.nbest["q1"] if e["text"] == ""]
    assert [(e["start_logit"], e["end_logit"]) for e in null_entries] == [(1.0, 1.0)]


def test_v2_answers_empty_when_score_diff_is_above_the_threshold():
    predictions = v2_predict(threshold=-1.0)
    assert predictions.answers == {"q1": ""}
    assert predictions.null_odds == {"q1": pytest.approx(-0.5)}


def test_v2_offers_the_null_answer_even_when_spans_fill_the_nbest():
    config = PostprocessConfig(n_best_size=1, version_2_with_negative=True)
    predictions = predict({3: 5.0}, {5: 5.0}, config=config)
    assert [e["text"] for e in predictions.nbest["q1"]] == ["Émile ZOLA", ""]


def test_example_without_a_valid_span_gets_the_empty_answer():
    no_max_context = window([0, 1], max_context=set())
    start = end = logits(6, {0: 2.0})
    v1 = compute_predictions([EXAMPLE], [no_max_context], [start], [end])
    assert (v1.answers, v1.nbest) == ({"q1": ""}, {"q1": []})
    config = PostprocessConfig(version_2_with_negative=True, null_score_diff_threshold=10.0)
    v2 = compute_predictions([EXAMPLE], [no_max_context], [start], [end], config)
    # Only the null (2+2 = 4) is left; its odds are taken against a nonce score of 0.
    assert v2.answers == {"q1": ""}
    assert v2.null_odds == {"q1": 4.0}
    assert v2.nbest["q1"] == [{"text": "", "probability": 1.0, "start_logit": 2.0, "end_logit": 2.0,
                               "start_char": -1, "end_char": -1}]


@pytest.mark.parametrize(
    "windows, starts, ends, message",
    [
        ([WINDOW_A], [logits(9)], [], "one row of each per window"),
        ([WINDOW_A], [logits(8)], [logits(9)], "has 9 tokens but only 8 logits"),
        ([WINDOW_A, window([0], set(), "zz")], [logits(9)] * 2, [logits(9)] * 2, "'zz', which is not among"),
        ([], [], [], "have no window, e.g. 'q1'"),
    ],
)
def test_inconsistent_inputs_are_rejected(windows, starts, ends, message):
    with pytest.raises(ValueError, match=message):
        compute_predictions([EXAMPLE], windows, starts, ends)


def test_write_prediction_files_v2_writes_the_three_official_files(tmp_path):
    predictions = v2_predict(threshold=0.0)
    out = str(tmp_path / "out")
    paths = write_prediction_files(predictions, out, version_2_with_negative=True)
    names = ["predictions.json", "nbest_predictions.json", "null_odds.json"]
    assert paths == [os.path.join(out, name) for name in names]
    loaded = [json.loads(pathlib.Path(path).read_text(encoding="utf-8")) for path in paths]
    assert loaded[0] == {"q1": "Émile"}
    assert loaded[1]["q1"][0].keys() == {"text", "probability", "start_logit", "end_logit"}
    assert loaded[2] == {"q1": pytest.approx(-0.5)}


def test_write_prediction_files_v1_has_no_null_odds(tmp_path):
    paths = write_prediction_files(predict({3: 5.0}, {5: 5.0}), str(tmp_path), version_2_with_negative=False)
    assert [os.path.basename(p) for p in paths] == ["predictions.json", "nbest_predictions.json"]
    assert not (tmp_path / "null_odds.json").exists()
