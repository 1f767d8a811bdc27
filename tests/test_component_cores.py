"""The pure cores of the custom components, exercised directly (no TFX)."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from bertqa import squad_io, windowing
from bertqa.raw_example import from_tf_example, to_tf_example
from components.bert_qa_transform import core as transform_core
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
    config = transform_core.TransformConfig(vocab_path, True, windowing.WindowConfig(seq_len=96, query_len=24,
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


def test_tokenizer_artifact_round_trips(vocab_path, tmp_path):
    config = transform_core.TransformConfig(vocab_path, True, windowing.WindowConfig(seq_len=128, query_len=32,
                                                                                     doc_stride=48))
    transform_core.write_tokenizer_artifact(config, str(tmp_path))
    read = transform_core.read_tokenizer_artifact(str(tmp_path))
    assert read.window == config.window and read.do_lower_case
    with open(read.vocab_path) as copied, open(vocab_path) as original:
        assert copied.read() == original.read()


@pytest.mark.parametrize(("f1", "blessed"), [(39.99, False), (40.0, True), (75.0, True)])
def test_blessing_follows_the_f1_threshold(f1, blessed):
    assert evaluator_core.bless({"exact_match": 0.0, "f1": f1}, evaluator_core.BlessingConfig(min_f1=40.0))[0] \
        is blessed
