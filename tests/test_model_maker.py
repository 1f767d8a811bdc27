"""The Model Maker question-answering tutorial runs with only its imports changed, on the project's core.

The tutorial's mobilebert_qa_squad needs TF Hub; here the same code runs on the
tiny_random spec (a 2-layer, 32-wide encoder) with a short sequence length, so a full
create/evaluate/export/evaluate_tflite round trip takes seconds.
"""

import copy
import json
import math
import os
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from bertqa.model import optimization
from bertqa.model_maker import model_spec, question_answer
from bertqa.model_maker.config import ExportFormat, QuantizationConfig
from bertqa.model_maker.question_answer import DataLoader

V1_KEYS = {"exact_match", "f1"}


def _tiny_spec(seq_len=128):
    spec = model_spec.get("tiny_random")
    spec.seq_len, spec.query_len, spec.doc_stride = seq_len, 32, 48
    return spec


def _check_v1_metrics(metric):
    assert set(metric) == V1_KEYS
    assert all(0.0 <= value <= 100.0 for value in metric.values())


def _tflite_input_shape(path):
    details = tf.lite.Interpreter(model_path=path).get_input_details()
    return sorted({tuple(d["shape"]) for d in details})


@pytest.fixture(autouse=True)
def _temporary_files_in_tmp_path(tmp_path, monkeypatch):
    # DataLoader and the model keep their files in new temporary directories, as Model Maker did.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture()
def squad_files(fixtures_dir, tmp_path):
    shutil.copy(fixtures_dir / "tiny_train.json", tmp_path / "train.json")
    shutil.copy(fixtures_dir / "tiny_eval.json", tmp_path / "dev.json")
    return str(tmp_path / "train.json"), str(tmp_path / "dev.json")


def test_tutorial_runs_top_to_bottom_with_only_imports_changed(squad_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train_data_path, validation_data_path = squad_files

    spec = _tiny_spec()  # the tutorial: model_spec.get('mobilebert_qa_squad')
    train_data = DataLoader.from_squad(train_data_path, spec, is_training=True)
    validation_data = DataLoader.from_squad(validation_data_path, spec, is_training=False)
    records = sum(1 for _ in tf.data.TFRecordDataset(train_data.record_file, compression_type="GZIP"))
    assert train_data.size == records >= 15  # one window at least per training question
    assert len(validation_data.examples) == 23 and validation_data.size >= 23
    assert max(len(w.input_word_ids) for w in validation_data.windows) <= 128

    model = question_answer.create(train_data, model_spec=spec, epochs=1)
    assert int(model.model.optimizer.iterations) == math.ceil(train_data.size / 16)  # tiny_random's batch

    model.summary()
    assert "bert_span_labeler" in capsys.readouterr().out

    metric = model.evaluate(validation_data)
    _check_v1_metrics(metric)

    model.export(export_dir=".")
    assert os.path.isfile("model.tflite") and os.path.isfile("vocab.txt")
    assert _tflite_input_shape("model.tflite") == [(1, 128)]

    os.remove("vocab.txt")
    tflite_written = os.path.getmtime("model.tflite")
    model.export(export_dir=".", export_format=ExportFormat.VOCAB)
    assert os.path.isfile("vocab.txt") and os.path.getmtime("model.tflite") == tflite_written

    tflite_metric = model.evaluate_tflite("model.tflite", validation_data)
    _check_v1_metrics(tflite_metric)

    config = QuantizationConfig.for_float16()
    model.export(export_dir=".", tflite_filename="model_fp16.tflite", quantization_config=config)
    model.export(export_dir=".", tflite_filename="model_fp32.tflite", quantization_config=None,
                 export_format=[ExportFormat.TFLITE])
    sizes = {name: os.path.getsize(f"model{name}.tflite") for name in ("", "_fp16", "_fp32")}
    # The default export is Model Maker's: dynamic-range quantized, smaller than float16.
    assert sizes[""] < sizes["_fp16"] < 0.6 * sizes["_fp32"]

    model = question_answer.create(train_data, model_spec=spec, epochs=5, batch_size=64)
    # 64 exceeds the data, so batches hold all windows: one step per epoch.
    assert int(model.model.optimizer.iterations) == 5

    new_spec = model_spec.get("mobilebert_qa")
    new_spec.seq_len = 512
    core = new_spec.to_spec()
    assert core.seq_len == 512 and core.hub_handle.endswith("uncased_L-24_H-128_B-512_A-4_F-4_OPT/1")
    assert (core.learning_rate, core.default_batch_size, core.query_len) == (4e-5, 32, 64)


def test_changing_the_spec_changes_the_windows_and_stale_data_is_refused(squad_files):
    spec = _tiny_spec(seq_len=128)
    long_windows = DataLoader.from_squad(squad_files[0], spec)
    spec.seq_len = 64
    short_windows = DataLoader.from_squad(squad_files[0], spec)
    assert max(len(w.input_word_ids) for w in short_windows.windows) <= 64
    assert short_windows.size > long_windows.size
    with pytest.raises(ValueError, match="Load the data again"):
        question_answer.create(long_windows, model_spec=spec, do_train=False).train(long_windows)
    model = question_answer.create(short_windows, model_spec=spec, do_train=False)
    assert model.spec.seq_len == 64
    spec.seq_len = 96  # a model already made keeps the spec it was made with
    assert model.spec.seq_len == 64


def test_train_seq_len_cuts_the_training_data_short_and_the_eval_data_at_seq_len(squad_files):
    spec = _tiny_spec(seq_len=128)
    spec.train_seq_len = 64
    train_data = DataLoader.from_squad(squad_files[0], spec)
    eval_data = DataLoader.from_squad(squad_files[1], spec, is_training=False)
    assert max(len(w.input_word_ids) for w in train_data.windows) <= 64
    assert 64 < max(len(w.input_word_ids) for w in eval_data.windows) <= 128
    model = question_answer.create(train_data, model_spec=spec, do_train=False)
    model.train(train_data, epochs=1, batch_size=16, steps_per_epoch=2)  # the short windows are the spec's: accepted
    spec.train_seq_len = None  # data cut for another training length is refused
    with pytest.raises(ValueError, match="Load the data again"):
        question_answer.create(train_data, model_spec=spec, do_train=False).train(train_data)


def test_layer_decay_and_answerless_keep_set_on_the_spec_reach_training(squad_files):
    spec = _tiny_spec(seq_len=64)
    train_data = DataLoader.from_squad(squad_files[0], spec)
    answerless = sum(1 for w in train_data.windows if w.start_position == 0)
    assert 0 < answerless < train_data.size  # the tiny file's long contexts leave windows without the answer
    spec.layer_decay, spec.answerless_keep, spec.warmup_fraction = 0.8, 0.001, 0.2
    model = question_answer.create(train_data, model_spec=spec, do_train=False)
    assert (model.spec.layer_decay, model.spec.answerless_keep, model.spec.warmup_fraction) == (0.8, 0.001, 0.2)
    model.train(train_data, epochs=1, batch_size=4)
    optimizer = model.model.optimizer
    assert isinstance(optimizer, optimization.LayerwiseAdamW)
    assert len(set(optimizer.get_config()["multipliers"].values())) > 1  # lower layers at lower rates
    # One epoch over the windows that train: those with an answer, and about a thousandth of the rest.
    assert int(optimizer.iterations) < math.ceil(train_data.size / 4)
    assert int(optimizer.iterations) >= math.ceil((train_data.size - answerless) / 4)


@pytest.mark.parametrize("name, handle_end, learning_rate, batch_size", [
    ("mobilebert_qa", "uncased_L-24_H-128_B-512_A-4_F-4_OPT/1", 4e-5, 32),
    ("mobilebert_qa_squad", "uncased_L-24_H-128_B-512_A-4_F-4_OPT/squadv1/1", 4e-5, 32),
    ("bert_qa", "bert_en_uncased_L-12_H-768_A-12/1", 8e-5, 16),
    ("minilm_offline", None, 1e-4, 32),
    ("tiny_random", None, 1e-3, 16),
])
def test_every_spec_name_gives_model_makers_values_without_touching_the_network(
        name, handle_end, learning_rate, batch_size):
    spec = model_spec.get(name)
    assert spec.uri is None if handle_end is None else spec.uri.endswith(handle_end)
    assert (spec.learning_rate, spec.default_batch_size) == (learning_rate, batch_size)
    if handle_end:  # Model Maker's BertQAModelSpec defaults
        assert (spec.seq_len, spec.query_len, spec.doc_stride, spec.predict_batch_size) == (384, 64, 128, 8)
        assert (spec.default_training_epochs, spec.trainable, spec.do_lower_case) == (2, True, True)
    assert model_spec.get(spec) is spec


def test_tpu_is_accepted_but_warned_about():
    with pytest.warns(UserWarning, match="TPU training is not supported"):
        spec = model_spec.get("tiny_random", tpu="grpc://10.0.0.2:8470")
    with pytest.warns(UserWarning, match="TPU training is not supported"):
        spec.tpu = "local"
    assert spec.to_spec() == model_spec.get("tiny_random").to_spec()


def test_misspelt_tunable_is_warned_about():
    spec = model_spec.get("tiny_random")
    with pytest.warns(UserWarning, match="'seq_length' is not a tunable"):
        spec.seq_length = 256
    assert spec.to_spec().seq_len == 384


def test_int8_export_calibrates_on_the_training_windows(squad_files, tmp_path):
    spec = _tiny_spec(seq_len=64)
    train_data = DataLoader.from_squad(squad_files[0], spec)
    model = question_answer.create(train_data, model_spec=spec, do_train=False)
    config = QuantizationConfig.for_int8(train_data, quantization_steps=4)
    (path,) = model.export(str(tmp_path), tflite_filename="int8.tflite", quantization_config=config,
                           export_format=ExportFormat.TFLITE)
    interpreter = tf.lite.Interpreter(model_path=path)
    assert any(d["dtype"] == np.int8 for d in interpreter.get_tensor_details())
    assert {d["dtype"] for d in interpreter.get_input_details()} == {np.int32}  # the Task Library's ids
    assert {d["dtype"] for d in interpreter.get_output_details()} == {np.float32}


def test_squad_v2_evaluation_reports_the_official_v2_keys(fixtures_dir, tmp_path):
    data = json.loads((fixtures_dir / "tiny_eval.json").read_text())
    data = copy.deepcopy(data)
    data["version"] = "v2.0"
    paragraph = data["data"][0]["paragraphs"][0]
    for question in (q for article in data["data"] for p in article["paragraphs"] for q in p["qas"]):
        question["is_impossible"] = False
    paragraph["qas"].append({"id": "no-answer-1", "question": "What is the capital of Mars?", "answers": [],
                             "is_impossible": True})
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(data))
    spec = _tiny_spec(seq_len=64)
    validation_data = DataLoader.from_squad(str(path), spec, is_training=False, version_2_with_negative=True)
    metric = question_answer.create(validation_data, model_spec=spec, do_train=False).evaluate(validation_data)
    assert {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
            "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(metric)
    assert metric["total"] == 24 and metric["NoAns_total"] == 1
    assert all(0.0 <= metric[key] <= 100.0 for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"))


def test_export_formats_model_maker_allows_only_for_other_tasks_are_refused(squad_files, tmp_path):
    spec = _tiny_spec(seq_len=64)
    model = question_answer.create(DataLoader.from_squad(squad_files[0], spec), model_spec=spec, do_train=False)
    with pytest.raises(ValueError, match="LABEL is not allowed"):
        model.export(str(tmp_path), export_format=ExportFormat.LABEL)
