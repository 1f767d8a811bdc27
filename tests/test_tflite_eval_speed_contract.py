"""The fast evaluate_tflite's contract: project models resize to batches, and batches and threads change no metric.

How much faster it is belongs to benchmarks/evaluate_tflite.py; here only what makes it
correct: a model of the project (tiny_random's encoder and span head, exported by
bertqa.model.serving and bertqa.on_device.tflite_export as the pipeline does) runs a batch of windows in
one invocation, and the batched, multi-threaded path scores exactly what Model Maker's
one-window-per-run loop scores.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf

from bertqa.data import windowing
from bertqa.data.tokenization import TokenizerConfig
from bertqa.model import evaluation, model_spec, serving, training
from bertqa.model_maker import question_answer
from bertqa.on_device import conversion, runtime, scoring, tflite_export

SPEC = model_spec.get("tiny_random")
WINDOW = windowing.WindowConfig(seq_len=SPEC.seq_len, query_len=SPEC.query_len, doc_stride=SPEC.doc_stride)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    tf.keras.utils.set_random_seed(2)
    path = str(tmp_path_factory.mktemp("saved_model"))
    serving.export_saved_model(training.build_model(SPEC), SPEC.resolved_vocab_path(), True, WINDOW, path,
                               on_device_lengths=SPEC.on_device_lengths)
    return path


def _export(saved_model: str, directory, variant: str, resizable_batch: bool = True) -> str:
    config = conversion.TfliteExportConfig(resizable_batch=resizable_batch)
    path = str(directory / f"{variant}_{resizable_batch}.tflite")
    tflite_export.export_tflite(saved_model, SPEC.resolved_vocab_path(), path, config,
                                conversion.QuantizationConfig.from_name(variant))
    return path


@pytest.fixture(scope="module")
def exported(saved_model, tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("tflite")
    return {variant: _export(saved_model, directory, variant) for variant in ("none", "dynamic")}


@pytest.fixture(scope="module")
def eval_data(fixtures_dir):
    tokenizer = TokenizerConfig(SPEC.resolved_vocab_path(), True)
    return evaluation.squad_file_windows(str(fixtures_dir / "tiny_eval.json"), tokenizer, WINDOW)


def _inputs(windows, seq_len=SPEC.seq_len):
    return [evaluation._padded(windows, name, seq_len) for name in conversion.INPUT_NAMES]


def _one_window_loop(path, examples, windows) -> evaluation.EvalResult:
    """Model Maker's evaluate_tflite: one window per run, one thread."""
    runner = runtime.TfliteQaRunner(path, num_threads=1)
    config = dataclasses.replace(evaluation.EvalConfig(), batch_size=1)
    return evaluation.evaluate(runner.run, examples, windows, config, pad_to=runner.seq_len)


@pytest.mark.parametrize("variant", ["none", "dynamic"])
def test_project_model_loads_with_batch_one_and_resizes_to_a_batch(exported, eval_data, variant):
    runner = runtime.TfliteQaRunner(exported[variant])
    details = tf.lite.Interpreter(model_path=exported[variant]).get_input_details()
    assert {tuple(d["shape"]) for d in details} == {(1, SPEC.seq_len)}  # what the Task Library fills
    windows = eval_data[1][:5]
    start, end = runner.run(*_inputs(windows))
    assert runner.batching_supported is True
    assert start.shape == end.shape == (5, SPEC.seq_len)
    for i in range(5):
        single = runner.run(*_inputs(windows[i:i + 1]))
        np.testing.assert_allclose(start[i], single[0][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(end[i], single[1][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["none", "dynamic"])
def test_fast_evaluate_tflite_scores_exactly_what_the_one_window_loop_scores(exported, eval_data, variant):
    examples, windows = eval_data
    fast = scoring.evaluate_tflite(exported[variant], examples, windows, evaluation.EvalConfig(), num_threads=2,
                                   batch_size=4, show_progress=False)
    loop = _one_window_loop(exported[variant], examples, windows)
    assert fast.metrics == loop.metrics
    assert fast.predictions.answers == loop.predictions.answers


def test_a_model_whose_batch_is_frozen_falls_back_and_scores_the_same(saved_model, tmp_path, eval_data):
    examples, windows = eval_data
    path = _export(saved_model, tmp_path, "none", resizable_batch=False)
    runner = runtime.TfliteQaRunner(path)
    runner.run(*_inputs(windows[:2]))
    assert runner.batching_supported is False
    fast = scoring.evaluate_tflite(path, examples, windows, evaluation.EvalConfig(), show_progress=False)
    assert fast.metrics == _one_window_loop(path, examples, windows).metrics


def test_evaluate_tflite_runs_one_single_threaded_interpreter_per_requested_thread(exported, eval_data, monkeypatch):
    threads = []
    original = runtime.TfliteQaRunner.__init__

    def spy(self, path, num_threads=1, runtime=runtime.DEFAULT_RUNTIME, lengths=None):
        threads.append((num_threads, runtime))
        original(self, path, num_threads, runtime, lengths)

    monkeypatch.setattr(runtime.TfliteQaRunner, "__init__", spy)
    examples, windows = eval_data
    assert len(windows) >= 3
    scoring.evaluate_tflite(exported["none"], examples, windows, evaluation.EvalConfig(), num_threads=3,
                            show_progress=False)
    assert threads == [(1, "litert")] * 3
    threads.clear()
    scoring.evaluate_tflite(exported["none"], examples, windows, evaluation.EvalConfig(), show_progress=False,
                            runtime="tensorflow")
    assert threads == [(1, "tensorflow")] * min(evaluation.default_num_threads(), len(windows))


def test_evaluate_tflite_refuses_windows_longer_than_the_model_takes(exported, eval_data):
    examples, windows = eval_data
    extra = (0,) * (SPEC.seq_len + 1 - len(windows[0].input_word_ids))
    too_long = dataclasses.replace(windows[0], input_word_ids=windows[0].input_word_ids + extra)
    with pytest.raises(ValueError, match=f"takes {SPEC.seq_len} tokens"):
        scoring.evaluate_tflite(exported["none"], examples, [too_long, *windows[1:]], evaluation.EvalConfig(),
                                show_progress=False)


def test_model_maker_evaluate_tflite_goes_through_the_fast_path(monkeypatch, eval_data):
    calls = []

    def fast_path(path, examples, windows, config, num_threads=None, **kwargs):
        calls.append((path, num_threads, config.max_answer_length))
        return evaluation.EvalResult(metrics={"exact_match": 1.0, "f1": 2.0},
                                     predictions=types.SimpleNamespace(answers={}))

    monkeypatch.setattr(scoring, "evaluate_tflite", fast_path)
    examples, windows = eval_data
    data = types.SimpleNamespace(examples=examples, windows=windows, version_2_with_negative=False)
    model = question_answer.QuestionAnswer("tiny_random")
    assert model.evaluate_tflite("m.tflite", data, max_answer_length=12, num_threads=2) == {"exact_match": 1.0,
                                                                                            "f1": 2.0}
    assert calls == [("m.tflite", 2, 12)]


def test_shipped_export_is_static_and_xnnpack_takes_layernorm_and_gelu(saved_model, tmp_path, eval_data):
    # The default export, as the pipeline ships it: every tensor static (else XNNPACK is off for
    # the whole model), and the on-device signature leaves XNNPACK only the attention's
    # activation-by-activation matmuls (and the embedding lookups) to hand back.
    path = _export(saved_model, tmp_path, "float16", resizable_batch=False)
    report = runtime.xnnpack_report(path)
    assert report.dynamic_tensors == ()
    outside = dict(report.outside)
    assert not {"MEAN", "RSQRT", "GELU", "FULLY_CONNECTED"} & set(outside), report.summary()
    assert report.delegated > 0.8 * report.nodes, report.summary()
    # The on-device graph computes the training graph's logits (here against the `logits` signature's export).
    windows = eval_data[1][:3]
    on_device = runtime.TfliteQaRunner(_export(saved_model, tmp_path, "none", resizable_batch=False))
    trained = runtime.TfliteQaRunner(_export(saved_model, tmp_path, "none"))
    for got, want in zip(on_device.run(*_inputs(windows)), trained.run(*_inputs(windows)), strict=True):
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_litert_runs_the_shipped_dynamic_range_file_on_xnnpack_where_tensorflow_does_not(saved_model, tmp_path,
                                                                                          eval_data):
    # LiteRT's XNNPACK takes the hybrid FULLY_CONNECTED layers (int8 weights, activations quantized
    # per row) and the attention's BATCH_MATMUL, which TensorFlow 2.16's interpreter leaves to its
    # builtin kernels; only the embedding lookups and the index arithmetic on the int32 inputs stay out.
    path = _export(saved_model, tmp_path, "dynamic", resizable_batch=False)
    litert = runtime.xnnpack_report(path, runtime.LITERT)
    tensorflow = runtime.xnnpack_report(path, runtime.TENSORFLOW)
    assert litert.dynamic_tensors == () and litert.partitions >= 1
    # GREATER_EQUAL, CUMSUM, SUB: the position ids counted from the input ids (bertqa.model.modeling).
    assert set(dict(litert.outside)) <= {"GATHER", "STRIDED_SLICE", "CAST", "GREATER_EQUAL", "CUMSUM", "SUB"}, \
        litert.summary()
    assert {"FULLY_CONNECTED", "BATCH_MATMUL"} & set(dict(tensorflow.outside)), tensorflow.summary()
    # Both run the same model: the logits differ only by how each quantizes activations.
    windows = eval_data[1][:3]
    in_litert = runtime.TfliteQaRunner(path, runtime=runtime.LITERT).run(*_inputs(windows))
    in_tensorflow = runtime.TfliteQaRunner(path, runtime=runtime.TENSORFLOW).run(*_inputs(windows))
    for got, want in zip(in_litert, in_tensorflow, strict=True):
        np.testing.assert_allclose(got, want, atol=0.05 * float(np.abs(want).max()) + 1e-3)


def test_an_unknown_runtime_is_refused(exported):
    with pytest.raises(ValueError, match="unknown TFLite runtime 'tflite-micro'"):
        runtime.TfliteQaRunner(exported["none"], runtime="tflite-micro")
