"""The run report's core: per-question scores, slices, the TFMA EvalResult and the page."""

import math

import pytest

from bertqa.data.raw_example import SquadExample
from bertqa.model import squad_metrics
from bertqa.operations import report_data, run_report


def _example(i, question, answers, context="word " * 150, title="A", impossible=False):
    return SquadExample(id=f"q{i}", title=title, context=context, question=question, answer_texts=tuple(answers),
                        answer_starts=tuple(0 for _ in answers), is_impossible=impossible)


EXAMPLES = [
    _example(0, "What is the tower made of?", ["iron", "wrought iron"]),
    _example(1, "In which year was it built?", ["1889"], title="B"),
    _example(2, "Who designed it?", ["Gustave Eiffel"], context="word " * 40),
    _example(3, "How tall is it?", ["330 metres tall today"], title="B"),
    _example(4, "Name the river.", ["the Seine"]),
]
ANSWERS = {"q0": "wrought iron", "q1": "1887", "q2": "Eiffel", "q3": "330 metres"}  # q4 has no prediction


def test_per_question_scores_average_to_the_official_metrics():
    scores = report_data.score_questions(EXAMPLES, ANSWERS)
    official = squad_metrics.squad_v1_metrics(EXAMPLES, ANSWERS)
    whole = report_data.overall(scores)
    assert whole.count == 5
    assert whole.exact_match == pytest.approx(official["exact_match"])
    assert whole.f1 == pytest.approx(official["f1"])
    assert scores[4].predicted == "" and scores[4].f1 == 0.0


def test_squad_2_scores_average_to_the_official_metrics():
    examples = [*EXAMPLES[:2], _example(9, "What is unanswerable?", [], impossible=True)]
    answers = {"q0": "iron", "q1": "", "q9": ""}
    official = squad_metrics.squad_v2_metrics(examples, answers)
    whole = report_data.overall(report_data.score_questions(examples, answers, version_2=True))
    assert whole.f1 == pytest.approx(official["f1"]) and whole.exact_match == pytest.approx(official["exact"])


@pytest.mark.parametrize(("question", "word"), [
    ("What is it?", "what"), ("In which year?", "which"), ("How many?", "how"), ("Name the river.", "other"),
    ("The tower was built when?", "when"), ("WHO built it", "who"), ("Somewhat odd?", "other")])
def test_question_word_is_the_first_wh_word(question, word):
    assert report_data.question_word(question) == word


def test_every_slice_family_partitions_the_questions_with_counts():
    scores = report_data.score_questions(EXAMPLES, ANSWERS)
    slices = report_data.slice_metrics(scores)
    assert set(slices) == {"question word", "answer length (words)", "context length (words)", "article"}
    for rows in slices.values():
        assert sum(row.count for row in rows) == len(EXAMPLES)
        # Count-weighted slice F1s add back to the overall F1.
        assert sum(row.f1 * row.count for row in rows) / len(EXAMPLES) == pytest.approx(
            report_data.overall(scores).f1)
    assert [(r.value, r.count) for r in slices["question word"]] == [
        ("what", 1), ("who", 1), ("which", 1), ("how", 1), ("other", 1)]
    assert [(r.value, r.count) for r in slices["answer length (words)"]] == [("1", 2), ("2", 2), ("4-5", 1)]
    assert [(r.value, r.count) for r in slices["context length (words)"]] == [("0-99", 1), ("100-199", 4)]
    assert [(r.value, r.count) for r in slices["article"]] == [("A", 3), ("B", 2)]
    assert slices["article"][1].f1 == pytest.approx((0.0 + 100 * 2 * (1.0 * 2 / 4) / (1.0 + 2 / 4)) / 2)


def test_baseline_answers_give_per_slice_baseline_f1():
    baseline = {"q0": "iron", "q1": "1889", "q2": "", "q3": "", "q4": "Seine"}
    scores = report_data.score_questions(EXAMPLES, ANSWERS, baseline_answers=baseline)
    rows = {r.value: r for r in report_data.slice_metrics(scores)["article"]}
    assert rows["B"].baseline_f1 == pytest.approx(50.0) and rows["A"].baseline_f1 == pytest.approx(200 / 3)


def test_worst_and_best_questions():
    worst, best = report_data.worst_and_best(report_data.score_questions(EXAMPLES, ANSWERS), worst=2, best=5)
    assert [s.id for s in worst] == ["q1", "q4"]
    assert [s.id for s in best] == ["q0"]


def test_sliced_metrics_load_in_tfma(tmp_path):
    import tensorflow_model_analysis as tfma

    scores = report_data.score_questions(EXAMPLES, ANSWERS)
    slices = report_data.slice_metrics(scores)
    report_data.write_tfma_eval_result(slices, report_data.overall(scores), str(tmp_path), "model/dir", "data/dir")
    result = tfma.load_eval_result(str(tmp_path))
    by_key = {key: metrics[""][""] for key, metrics in result.slicing_metrics}  # output name, sub key
    assert by_key[()]["f1"]["doubleValue"] == pytest.approx(report_data.overall(scores).f1)
    assert by_key[(("article", "B"),)]["example_count"]["doubleValue"] == 2
    assert by_key[(("question_word", "what"),)]["exact_match"]["doubleValue"] == 100.0
    assert len(by_key) == 1 + sum(len(rows) for rows in slices.values())
    assert result.model_location == "model/dir" and result.data_location == "data/dir"


def _report(**overrides):
    fields = dict(
        metrics={"exact_match": 20.0, "f1": 43.21}, blessed=False, reason="f1 43.21 < min_f1 50.00", pushed=False,
        pushed_destination=None, scores=report_data.score_questions(EXAMPLES, ANSWERS),
        curve=[report_data.CurvePoint(s, 5.0 / s, 1e-4, 9.0) for s in (20, 40, 60)],
        variants={"saved_model": {"f1": 43.21}, "pushed_variants": [], "variants": [
            {"variant": "dynamic", "size_bytes": 23_000_000, "latency_ms": {"1": 250.0, "2": 240.0},
             "task_library_latency_ms": {"1": 280.0}, "exact_match": 20.0, "f1": 42.9, "f1_drop": 0.31,
             "task_library_ok": True, "blessed": False, "reason": "SavedModel not blessed",
             "xnnpack": {"nodes": 400, "delegated": 350}}]},
        provenance={"spec": "tiny", "commit": "abc"})
    fields.update(overrides)
    return run_report.RunReport(**fields)


def test_page_is_self_contained_and_escapes_what_it_shows():
    hostile = _example(7, "<script>alert(1)</script> what?", ["<b>x</b>"])
    report = _report(scores=report_data.score_questions([hostile, *EXAMPLES], {"q7": "<img src=x onerror=1>"}))
    page = run_report.render_html(report)
    assert "<script" not in page and "onerror=1>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    for element in ('id="headline"', 'id="variant-table"', 'id="training-curve"', 'id="variant-plot"',
                    'id="slice-plot"', 'id="worst-table"', "not blessed", "f1 43.21 &lt; min_f1 50.00"):
        assert element in page
    assert page.count("data:image/png;base64,") == 3


def test_page_without_curve_or_variants_says_so():
    page = run_report.render_html(_report(curve=(), variants=None))
    assert "No TensorBoard training logs" in page and "No TFLite variants" in page
    assert 'id="training-curve"' not in page and 'id="variant-plot"' not in page


def test_markdown_table_of_a_slice():
    rows = report_data.slice_metrics(report_data.score_questions(EXAMPLES, ANSWERS))["article"]
    table = run_report.markdown_table(rows, "article")
    assert table.splitlines()[2] == f"| A | 3 | {100 / 3:.1f} | {rows[0].f1:.1f} |"
    assert not any(math.isnan(r.f1) for r in rows)


def test_a_time_budgeted_training_shows_the_steps_it_trained_and_its_budget():
    summary = {"steps": 2684, "steps_trained": 1702, "batch_size": 32, "epochs": 1.0, "train_windows": 85883,
               "learning_rate": 1e-4, "final_loss": 1.2, "time_budget_seconds": 3600.0, "training_seconds": 3591.4,
               "stopped_by_time_budget": True}
    page = run_report.render_html(_report(training=summary))
    assert "1702 of 2684 steps in 3591 s (time budget 60 min, reached) of batch 32" in page
    unbudgeted = run_report.render_html(_report(training={**summary, "time_budget_seconds": None}))
    assert "<p>2684 steps of batch 32" in unbudgeted
