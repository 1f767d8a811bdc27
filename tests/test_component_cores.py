"""The pure cores of the custom components, exercised directly (no TFX)."""

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from bertqa.data import squad_io, windowing
from bertqa.data.raw_example import from_tf_example, to_tf_example
from bertqa.model.evaluation import EvalConfig, score
from components.bert_qa_transform import core as transform_core
from components.bert_qa_transform import tokenizer_artifact
from components.squad_evaluator import core as evaluator_core
from components.squad_example_gen import core as example_gen_core


def test_example_gen_core_emits_one_example_per_question(fixtures_dir):
    path = str(fixtures_dir / "tiny_train.json")
    expected, _ = squad_io.read_squad_file(path)
    with beam.Pipeline() as pipeline:
        ids = (pipeline | example_gen_core.SquadFilesToExamples([path], squad_io.SquadReadConfig())
               | beam.Map(lambda proto: from_tf_example(proto).id))
        assert_that(ids, equal_to([e.id for e in expected]))


def test_example_gen_validation_names_the_file_of_invalid_json(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"data": [')
    with pytest.raises(squad_io.SquadDataError, match="broken.json"):
        example_gen_core.validate_files([str(bad)], squad_io.SquadReadConfig())


def test_example_gen_reports_no_file_for_a_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(squad_io.SquadDataError, match="no SQuAD file matches"):
        example_gen_core.list_input_files(str(tmp_path / "*.json"))


def test_transform_core_windows_every_question_and_reports_counts(fixtures_dir, vocab_path, tmp_path):
    examples, _ = squad_io.read_squad_file(str(fixtures_dir / "tiny_eval.json"))
    config = tokenizer_artifact.TransformConfig(vocab_path, True, windowing.WindowConfig(seq_len=96, query_len=24,
                                                                                     doc_stride=32))
    report_path = str(tmp_path / "report")
    with beam.Pipeline() as pipeline:
        records = pipeline | beam.Create([to_tf_example(e).SerializeToString() for e in examples])
        windows, report = records | transform_core.ExamplesToWindows(config, is_training=True)
        example_ids = windows | beam.Map(lambda w: windowing.window_from_tf_example(w).example_id) | beam.Distinct()
        assert_that(example_ids, equal_to([e.id for e in examples]))
        _ = report | beam.Map(json.dumps) | beam.io.WriteToText(report_path, shard_name_template="")
    with open(report_path) as f:
        merged = json.load(f)
    assert merged["questions"] == len(examples)
    assert sum(merged["windows_per_question"].values()) == len(examples)
    # seq_len 96 forces several windows for these paragraphs.
    assert merged["windows"] > len(examples)


def _window_lengths(config, records, is_training, path):
    """The token count of each window ExamplesToWindows cuts from `records` (written to `path`)."""
    with beam.Pipeline() as pipeline:
        windows, _ = (pipeline | beam.Create(records)
                      | transform_core.ExamplesToWindows(config, is_training=is_training))
        _ = (windows | beam.Map(lambda w: str(len(windowing.window_from_tf_example(w).input_word_ids)))
             | beam.io.WriteToText(path, shard_name_template=""))
    with open(path) as f:
        return [int(line) for line in f]


def test_transform_core_cuts_training_windows_at_train_seq_len_and_eval_windows_at_seq_len(
        fixtures_dir, vocab_path, tmp_path):
    examples, _ = squad_io.read_squad_file(str(fixtures_dir / "tiny_eval.json"))
    records = [to_tf_example(e).SerializeToString() for e in examples]
    config = tokenizer_artifact.TransformConfig(
        vocab_path, True, windowing.WindowConfig(seq_len=384, query_len=24, doc_stride=32),
        train_window=windowing.WindowConfig(seq_len=64, query_len=24, doc_stride=32))
    train = _window_lengths(config, records, True, str(tmp_path / "train"))
    evaluation = _window_lengths(config, records, False, str(tmp_path / "eval"))
    assert max(train) <= 64 < max(evaluation) <= 384
    assert len(train) > len(evaluation)  # the same questions, cut shorter


def test_tokenizer_artifact_round_trips(vocab_path, tmp_path):
    config = tokenizer_artifact.TransformConfig(vocab_path, True, windowing.WindowConfig(seq_len=128, query_len=32,
                                                                                     doc_stride=48))
    tokenizer_artifact.write_tokenizer_artifact(config, str(tmp_path))
    read = tokenizer_artifact.read_tokenizer_artifact(str(tmp_path))
    assert read.window == config.window and read.do_lower_case
    with open(read.vocab_path) as copied, open(vocab_path) as original:
        assert copied.read() == original.read()


@pytest.mark.parametrize(("f1", "blessed"), [(39.99, False), (40.0, True), (75.0, True)])
def test_blessing_follows_the_f1_threshold(f1, blessed):
    assert evaluator_core.bless({"exact_match": 0.0, "f1": f1}, evaluator_core.BlessingConfig(min_f1=40.0))[0] \
        is blessed


def _null_window(example_id: str, context_tokens: int):
    # [CLS] q [SEP] then `context_tokens` one-character tokens at chars 0, 2, 4, ...
    starts = (-1, -1, -1) + tuple(2 * i for i in range(context_tokens))
    return windowing.Window(
        unique_id=0, example_id=example_id, window_index=0, input_word_ids=(0,) * len(starts),
        input_mask=(1,) * len(starts), input_type_ids=(0,) * len(starts), start_position=0, end_position=0,
        token_char_starts=starts, token_char_ends=tuple(s + 1 if s >= 0 else -1 for s in starts),
        token_is_max_context=tuple(int(s >= 0) for s in starts))


def _span_or_null_logits(null: float) -> np.ndarray:
    """Logits over 6 positions: [CLS] (the null answer) at `null`, the token "b" at 2, the rest far below."""
    row = np.full(6, -5.0)
    row[0], row[4] = null, 2.0
    return row


def _answerable_and_impossible():
    """Two questions on the context "a b c": one answered by "b", one unanswerable; one window each."""
    from bertqa.data.raw_example import SquadExample

    examples = [SquadExample("has", "t", "a b c", "q?", ("b",), (2,)),
                SquadExample("none", "t", "a b c", "q?", is_impossible=True)]
    return examples, [_null_window("has", 3), _null_window("none", 3)]


def test_squad2_evaluation_applies_the_threshold_that_maximises_f1():
    examples, windows = _answerable_and_impossible()
    # Both: the span "b" (token 4) scores 2 + 2 = 4; the null score ([CLS]) is 1 + 1 = 2 for "has"
    # and 3 + 3 = 6 for "none". At threshold 0, "none" (null - best = 2 > 0) is already null and "has"
    # (2 - 4 = -2) answers "b": both right. A threshold of 2 or more would make "none" answer "b".
    starts = [_span_or_null_logits(1.0), _span_or_null_logits(3.0)]
    config = EvalConfig(version_2_with_negative=True)
    untuned = score(examples, windows, starts, starts, config)
    tuned = evaluator_core._with_tuned_null_threshold(examples, windows, starts, starts, config, untuned)
    assert tuned.metrics["f1"] == pytest.approx(tuned.metrics["best_f1"]) == pytest.approx(100.0)
    assert tuned.metrics["null_score_diff_threshold"] == pytest.approx(untuned.metrics["best_f1_thresh"])
    assert "untuned_f1" in tuned.metrics
    assert tuned.predictions.answers == {"has": "b", "none": ""}


def test_squad2_tuned_threshold_turns_a_wrong_answer_into_no_answer():
    examples, windows = _answerable_and_impossible()

    # null - best: "has" 2 - 4 = -2, "none" 3 - 4 = -1: at threshold 0 both answer "b" (F1 50);
    # any threshold in [-2, -1) makes "none" null and keeps "has": F1 100.
    starts = [_span_or_null_logits(1.0), _span_or_null_logits(1.5)]
    config = EvalConfig(version_2_with_negative=True)
    untuned = score(examples, windows, starts, starts, config)
    assert untuned.metrics["f1"] == pytest.approx(50.0)
    tuned = evaluator_core._with_tuned_null_threshold(examples, windows, starts, starts, config, untuned)
    assert tuned.metrics["f1"] == pytest.approx(100.0)
    assert tuned.metrics["untuned_f1"] == pytest.approx(50.0)
    assert tuned.predictions.answers == {"has": "b", "none": ""}
