"""bertqa.on_device.scoring.answer_agreement: how often two runtimes give the same answer."""

from __future__ import annotations

from bertqa.data.raw_example import SquadExample
from bertqa.on_device import scoring

EXAMPLES = [SquadExample(id=f"q{i}", title="t", context="c", question="q") for i in range(4)]


def test_the_same_answer_up_to_squad_normalization_agrees():
    ours = {"q0": "the Eiffel Tower", "q1": "1953", "q2": "Ike", "q3": "Paris"}
    theirs = {"q0": "Eiffel Tower.", "q1": "1953", "q2": "Eisenhower", "q3": "paris"}
    assert scoring.answer_agreement(EXAMPLES, ours, theirs) == 0.75


def test_two_empty_answers_do_not_agree():
    # Two files that answer nothing (missing, empty, or only an article) agree on nothing.
    ours = {"q0": "", "q1": "1953", "q2": "the"}
    theirs = {"q0": "", "q1": "1953", "q2": "a"}
    assert scoring.answer_agreement(EXAMPLES, ours, theirs) == 0.25
    assert scoring.answer_agreement(EXAMPLES, {}, {}) == 0.0
