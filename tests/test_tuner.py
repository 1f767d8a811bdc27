"""TFX's Tuner in the pipeline (--tune): the search space, the tuning split cut by paragraph from
the train split, the time budget, and a real pipeline run whose Trainer trains with the best
trial's values (training summary, ML Metadata lineage, run report).
"""

from __future__ import annotations

import json
import pathlib
import time

import pytest
import tensorflow as tf

from bertqa.data import squad_io, windowing
from bertqa.data.tokenization import WordPieceTokenizer
from bertqa.model import model_spec, tuning
from components.trainer import tuner as tuner_component


def test_the_best_values_replace_the_specs_settings_and_the_batch_size_and_unknown_ones_are_refused():
    spec = model_spec.get("tiny_random")
    tuned, batch = model_spec.apply_hyperparameters(
        spec, 16, {"learning_rate": 3e-4, "warmup_fraction": 0.2, "dropout_rate": 0.0, "batch_size": 8})
    assert (tuned.learning_rate, tuned.warmup_fraction, tuned.dropout_rate, batch) == (3e-4, 0.2, 0.0, 8)
    assert tuned.random_encoder == spec.random_encoder  # nothing else changes
    assert model_spec.apply_hyperparameters(spec, 16, {}) == (spec, 16)
    with pytest.raises(ValueError, match=r"\['seq_len'\] are not settings of this trainer"):
        model_spec.apply_hyperparameters(spec, 16, {"seq_len": 128})


def test_the_search_space_lies_around_the_specs_own_settings():
    spec = model_spec.get("tiny_random")
    space = {hp.name: hp for hp in tuning.search_space(spec, 16).space}
    assert set(space) == {*model_spec.TUNABLE_FIELDS, "batch_size"}
    assert (space["learning_rate"].min_value, space["learning_rate"].max_value) == pytest.approx(
        (spec.learning_rate / 4, spec.learning_rate * 4))
    assert 16 in space["batch_size"].values and spec.dropout_rate in space["dropout_rate"].values


def test_the_tuning_config_of_the_custom_config_refuses_unknown_fields():
    assert tuner_component.tuning_config({}) == tuning.TuningConfig()
    config = tuner_component.tuning_config({"tuning": json.dumps({"max_trials": 2, "budget_minutes": 1.5})})
    assert (config.max_trials, config.trial_seconds) == (2, 45.0)
    with pytest.raises(ValueError, match=r"names \['trials'\]"):
        tuner_component.tuning_config({"tuning": json.dumps({"trials": 2})})
    with pytest.raises(ValueError, match="at least one trial"):
        tuning.TuningConfig(max_trials=0)


def test_no_trial_starts_once_the_search_budget_is_spent():
    oracle = tuning.BudgetedRandomSearch(budget_seconds=0.2, objective=tuning.keras_tuner.Objective("val_loss", "min"),
                                         max_trials=10, seed=1,
                                         hyperparameters=tuning.search_space(model_spec.get("tiny_random"), 16))
    assert oracle.populate_space("0")["status"] == "RUNNING"  # the first trial always runs
    assert oracle.populate_space("1")["status"] == "RUNNING"
    time.sleep(0.25)
    assert oracle.populate_space("2")["status"] == "STOPPED"


@pytest.fixture(scope="module")
def window_file(tmp_path_factory, fixtures_dir, vocab_path) -> str:
    spec = model_spec.get("tiny_random")
    examples, _ = squad_io.read_squad_file(str(fixtures_dir / "tiny_train.json"))
    # A short window and stride, so that long contexts make several windows per question.
    config = windowing.WindowConfig(seq_len=64, query_len=16, doc_stride=24)
    windows, _ = windowing.make_windows(examples, WordPieceTokenizer(spec.tokenizer_config()), config,
                                        is_training=True)
    path = str(tmp_path_factory.mktemp("tuning") / "windows.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for window in windows:
            writer.write(windowing.window_to_tf_example(window).SerializeToString())
    return path


def _read(path: str) -> list[windowing.Window]:
    return [windowing.window_from_tf_example(r) for r in
            tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()]


def _contexts(fixtures_dir: pathlib.Path) -> dict[str, str]:
    examples, _ = squad_io.read_squad_file(str(fixtures_dir / "tiny_train.json"))
    return {e.id: e.context for e in examples}


def test_the_tuning_split_holds_out_whole_paragraphs_of_the_train_split(window_file, fixtures_dir, tmp_path):
    split = tuning.write_tuning_split([window_file], str(tmp_path), tuning.TuningConfig(validation_fraction=0.3))
    train, held_out = _read(split.train_file), _read(split.validation_file)
    assert (len(train), len(held_out)) == (split.train_windows, split.validation_windows)
    assert train and held_out and split.paragraphs >= 2
    context = _contexts(fixtures_dir)
    # No paragraph on both sides, and every window of a question on its paragraph's side.
    assert not {context[w.example_id] for w in train} & {context[w.example_id] for w in held_out}
    assert not {w.example_id for w in train} & {w.example_id for w in held_out}
    assert len(train) + len(held_out) == len(_read(window_file))
    again = tuning.write_tuning_split([window_file], str(tmp_path / "again"),
                                      tuning.TuningConfig(validation_fraction=0.3))
    assert [w.unique_id for w in _read(again.validation_file)] == [w.unique_id for w in held_out]


def test_the_tuning_sample_is_capped_at_whole_questions(window_file, tmp_path):
    import collections

    whole = tuning.write_tuning_split([window_file], str(tmp_path / "whole"), tuning.TuningConfig())
    capped = tuning.write_tuning_split([window_file], str(tmp_path / "capped"), tuning.TuningConfig(sample_windows=10))
    assert 0 < capped.train_windows < whole.train_windows
    per_question = collections.Counter(w.example_id for w in _read(window_file))
    sampled = collections.Counter(w.example_id for w in _read(capped.train_file))
    assert all(per_question[q] == n for q, n in sampled.items())  # no question cut in two


def test_one_paragraph_cannot_be_cut_and_says_so(tmp_path, window_file):
    one = _read(window_file)[:1]
    path = str(tmp_path / "one.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        writer.write(windowing.window_to_tf_example(one[0]).SerializeToString())
    with pytest.raises(ValueError, match="1 paragraph"):
        tuning.write_tuning_split([path], str(tmp_path / "out"), tuning.TuningConfig())


def test_tune_flags_put_a_tuner_before_the_trainer_and_feed_it_the_best_hyperparameters():
    import local_runner
    from pipeline.pipeline import create_pipeline

    config = local_runner.build_config(local_runner.parse_args(["--tune", "--tune-trials", "3", "--tune-minutes", "2"]))
    assert (config.tuning.max_trials, config.tuning.budget_minutes) == (3, 2.0)
    components = {c.id: c for c in create_pipeline(config).components}
    tuner, trainer = components["Tuner"], components["Trainer"]
    assert trainer.inputs["hyperparameters"].producer_component_id == "Tuner"
    assert json.loads(tuner.exec_properties["custom_config"])["tuning"] == json.dumps(
        {"max_trials": 3, "budget_minutes": 2.0, "sample_windows": 4000, "validation_fraction": 0.2,
         "epochs": 1.0, "seed": tuning.TuningConfig().seed})
    assert components["RunReporter"].inputs["tuner_results"].producer_component_id == "Tuner"
    untuned = {c.id for c in create_pipeline(local_runner.build_config(local_runner.parse_args([]))).components}
    assert "Tuner" not in untuned


# --- a real pipeline run with the Tuner ---------------------------------------------------------

TUNED_ARGS = ["--train-pattern", "tiny_train.json", "--eval-pattern", "tiny_eval.json", "--spec", "tiny_random",
              "--min-f1", "0", "--train-steps", "20", "--tune", "--tune-trials", "2", "--tune-minutes", "3"]


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, learnable_data_dir):
    import local_runner

    args = ["--runs-dir", str(tmp_path_factory.mktemp("tuned")), "--data-dir", str(learnable_data_dir), *TUNED_ARGS]
    assert local_runner.main(args) == 0
    return local_runner.build_config(local_runner.parse_args(args))


def _only(directory: pathlib.Path, name: str) -> pathlib.Path:
    (found,) = directory.glob(f"*/{name}")
    return found


@pytest.mark.e2e
def test_the_trainer_trains_with_the_best_trials_values_recorded_in_its_summary_and_ml_metadata(tuned_run):
    import local_runner
    from bertqa.operations import metadata_store

    root = pathlib.Path(tuned_run.pipeline_root)
    trials = json.loads(_only(root / "Tuner" / "tuner_results", "tuner_results.json").read_text())
    best = json.loads(_only(root / "Tuner" / "best_hyperparameters", "best_hyperparameters.txt").read_text())
    assert 1 <= len(trials) <= 2 and all(t["score"] > 0 for t in trials)
    assert trials[0]["score"] == min(t["score"] for t in trials)  # best first
    assert {k: trials[0][k] for k in best["values"]} == best["values"]
    summary = json.loads(_only(root / "Trainer" / "model", "training_summary.json").read_text())
    assert summary["hyperparameters"] == best["values"]
    assert summary["learning_rate"] == pytest.approx(best["values"]["learning_rate"])
    assert (summary["batch_size"], summary["dropout_rate"], summary["warmup_fraction"]) == (
        best["values"]["batch_size"], best["values"]["dropout_rate"], best["values"]["warmup_fraction"])

    store = metadata_store.sqlite_store(local_runner.metadata_path(tuned_run))
    (model,) = [a for a in store.get_artifacts_by_type("Model")
                if metadata_store.producer_component(store, a.id) == "Trainer"]
    inputs = metadata_store.execution_inputs(store, metadata_store.producer_execution(store, model.id).id)
    (hyperparameters,) = inputs["hyperparameters"]
    assert metadata_store.producer_component(store, hyperparameters.id) == "Tuner"
    assert pathlib.Path(hyperparameters.uri, "best_hyperparameters.txt").read_text() == json.dumps(best)


@pytest.mark.e2e
def test_the_run_report_shows_the_trials_and_which_one_trained_the_model(tuned_run):
    import local_runner
    from bertqa.operations import metadata_store

    store = metadata_store.sqlite_store(local_runner.metadata_path(tuned_run))
    report = metadata_store.latest_artifact(store, "bertqa_artifacts.RunReport")
    page = pathlib.Path(metadata_store.custom_properties(report)["report"]).read_text()
    table = page.split('id="tuning-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") - 1 >= 1  # header + one row per trial
    assert table.count("<td>yes</td>") == 1
