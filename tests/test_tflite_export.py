"""TFLite export: conversion per quantization, Task Library metadata, the Task Library itself, the runner.

A small stand-in replaces the trainer's BERT: same `logits` signature, an embedding
over the real 30,522-token vocabulary, one attention layer (whose reshapes freeze
the batch of 1 when exported with `resizable_batch=False`) and two dense layers. Its logits add a ramp over the
context tokens, early tokens favoured as starts and late ones as ends, so the Task
Library always finds a valid span, and would find none if start and end were
swapped in the metadata.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from bertqa.model import (
    model_cache,
    serving,  # noqa: E402
)
from bertqa.on_device import conversion, task_library, tflite_export  # noqa: E402
from bertqa.on_device.conversion import QuantizationConfig, TfliteExportConfig
from bertqa.on_device.runtime import TfliteQaRunner

SEQ_LEN = conversion.TASK_LIBRARY_SEQ_LEN
VOCAB_SIZE = 30522
CLS, SEP = 101, 102
VARIANTS = {
    "none": QuantizationConfig.none(),
    "dynamic": QuantizationConfig.for_dynamic(),
    "float16": QuantizationConfig.for_float16(),
    "int8": QuantizationConfig.for_int8(representative_steps=16),
}
# Largest |tflite - SavedModel| logit difference, as a fraction of the largest |logit|.
# Observed with the stand-in: 0, 3e-4, 2e-4 and 4e-2.
RELATIVE_TOLERANCE = {"none": 1e-5, "float16": 5e-3, "dynamic": 1e-2, "int8": 0.15}
CONTEXT = "The quick brown fox jumps over the lazy dog near the old river bank in Paris every morning ."
QUESTION = "Where does the fox jump?"


def _inputs(name: str) -> keras.Input:
    return keras.Input((None,), dtype=tf.int32, name=name)


def _standin_keras_model(attention: bool) -> keras.Model:
    ids, mask, segments = _inputs("input_word_ids"), _inputs("input_mask"), _inputs("input_type_ids")
    x = keras.layers.Embedding(VOCAB_SIZE, 16)(ids) + keras.layers.Embedding(2, 16)(segments)
    if attention:
        attend = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)
        attended = attend(x, x, attention_mask=tf.cast(mask[:, None, :], tf.bool))
        x = keras.layers.LayerNormalization()(x + attended)
    x = keras.layers.Dense(16, activation="gelu")(x)
    logits = keras.layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(stddev=0.1))(x)
    return keras.Model([ids, mask, segments], logits)


class _StandIn(tf.Module):
    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int32, name) for name in conversion.INPUT_NAMES]
    )
    def logits(self, input_word_ids, input_mask, input_type_ids):
        out = self.model([input_word_ids, input_mask, input_type_ids])
        position = tf.cast(tf.range(tf.shape(input_word_ids)[1]), tf.float32)[None, :]
        context = tf.cast(input_mask * input_type_ids, tf.float32)
        return {
            "start_logits": out[..., 0] + context * (8.0 - 0.1 * position),
            "end_logits": out[..., 1] + context * (4.0 + 0.1 * position),
        }


def _save_standin(directory: str, attention: bool) -> str:
    keras.utils.set_random_seed(0)
    module = _StandIn(_standin_keras_model(attention))
    tf.saved_model.save(module, directory, signatures={serving.LOGITS_SIGNATURE: module.logits})
    return directory


def _windows(count: int, seed: int) -> dict[str, np.ndarray]:
    """[count, SEQ_LEN] windows shaped like the trainer's: [CLS] q [SEP] c [SEP] then padding."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, SEQ_LEN), np.int32)
    mask = np.zeros_like(ids)
    segments = np.zeros_like(ids)
    for row in range(count):
        question, context = int(rng.integers(3, 12)), int(rng.integers(10, 50))
        question_ids = rng.integers(1000, VOCAB_SIZE, question)
        context_ids = rng.integers(1000, VOCAB_SIZE, context)
        tokens = [CLS, *question_ids, SEP, *context_ids, SEP]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
        segments[row, question + 2 : len(tokens)] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": segments}


def _rows(windows: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(windows["input_word_ids"])
    return [{name: array[i] for name, array in windows.items()} for i in range(count)]


@pytest.fixture(scope="module")
def vocab_path() -> str:
    path = model_cache.default_model_dir() / "vocab.txt"
    if not path.is_file():
        pytest.fail(f"{path} is missing; run `python -m bertqa.model.model_cache` (scripts/setup.sh does).")
    return str(path)


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory) -> str:
    return _save_standin(str(tmp_path_factory.mktemp("standin")), attention=True)


@pytest.fixture(scope="module")
def exported(standin_dir, vocab_path, tmp_path_factory) -> dict[str, conversion.ExportResult]:
    out_dir = tmp_path_factory.mktemp("tflite")
    calibration = _rows(_windows(16, seed=1))  # unpadded 1-D rows work too, but these are padded
    return {
        name: tflite_export.export_tflite(
            standin_dir,
            vocab_path,
            str(out_dir / f"model_{name}.tflite"),
            TfliteExportConfig(),
            quantization,
            representative_windows=calibration,
        )
        for name, quantization in VARIANTS.items()
    }


@pytest.fixture(scope="module")
def eval_windows() -> dict[str, np.ndarray]:
    return _windows(3, seed=2)


@pytest.fixture(scope="module")
def reference_logits(standin_dir, eval_windows) -> tuple[np.ndarray, np.ndarray]:
    logits_fn = tf.saved_model.load(standin_dir).signatures[serving.LOGITS_SIGNATURE]
    outputs = logits_fn(**{name: tf.constant(array) for name, array in eval_windows.items()})
    return outputs["start_logits"].numpy(), outputs["end_logits"].numpy()


def _metadata(path: str) -> tuple[dict, list[str]]:
    from tensorflow_lite_support.metadata.python import metadata

    displayer = metadata.MetadataDisplayer.with_model_file(path)
    return json.loads(displayer.get_metadata_json()), displayer.get_packed_associated_file_list()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_signature_takes_one_int32_window_of_its_length_and_returns_float_logits(exported, variant):
    interpreter = tf.lite.Interpreter(model_path=exported[variant].path)
    lengths = []
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        length = int(key.removeprefix("seq_"))
        lengths.append(length)
        for name, details in runner.get_input_details().items():
            assert list(details["shape"]) == [1, length], name
            # Static, batch included: one dynamic-sized tensor would keep XNNPACK off the whole model.
            assert list(details["shape_signature"]) == [1, length], name
            assert details["dtype"] == np.int32, name
        for name, details in runner.get_output_details().items():
            assert list(details["shape"]) == [1, length], name
            assert details["dtype"] == np.float32, name
    # float16 keeps the 384 signature alone (bertqa.on_device.conversion).
    assert sorted(lengths) == ([SEQ_LEN] if variant == "float16" else [128, 160, 176, 192, 224, 256, 320, SEQ_LEN])
    assert [list(d["shape"]) for d in interpreter.get_input_details()] == [[1, SEQ_LEN]] * 3  # subgraph 0
    assert exported[variant].warnings == ()
    assert exported[variant].size_bytes == os.path.getsize(exported[variant].path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_float_saved_model_within_its_tolerance(
    exported, variant, eval_windows, reference_logits
):
    runner = TfliteQaRunner(exported[variant].path)
    got = runner.run(**eval_windows)
    for name, tflite_logits, saved_model_logits in zip(
        conversion.OUTPUT_NAMES, got, reference_logits, strict=True
    ):
        scale = np.abs(saved_model_logits).max()
        error = np.abs(tflite_logits - saved_model_logits).max()
        assert error <= RELATIVE_TOLERANCE[variant] * scale, f"{name}: {error} vs scale {scale}"


def test_quantized_variants_are_quantized_and_smaller(exported):
    sizes = {name: result.size_bytes for name, result in exported.items()}
    # Smaller than the float file (on the stand-in the shorter signatures' position rows outweigh its
    # weights, so dynamic and int8 are not below float16's one signature; benchmarks/RESULTS.md has MiniLM's).
    assert max(sizes["dynamic"], sizes["float16"], sizes["int8"]) < sizes["none"]
    for variant in ("dynamic", "int8"):
        interpreter = tf.lite.Interpreter(model_path=exported[variant].path)
        dtypes = {details["dtype"] for details in interpreter.get_tensor_details()}
        assert np.int8 in dtypes, variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_metadata_packs_vocab_and_names_tensors_as_the_task_library_expects(exported, variant):
    path = exported[variant].path
    model_metadata, packed_files = _metadata(path)
    assert "vocab.txt" in packed_files
    subgraph = model_metadata["subgraph_metadata"][0]
    tokenizer = subgraph["input_process_units"][0]
    assert tokenizer["options_type"] == "BertTokenizerOptions"
    assert tokenizer["options"]["vocab_file"][0]["name"] == "vocab.txt"

    # Metadata entries follow the subgraph's tensor order; each name must sit on the
    # tensor the signature gives that role, whatever order the converter chose.
    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("seq_384")  # subgraph 0's, which the metadata describes
    role_by_index = {d["index"]: name for name, d in runner.get_input_details().items()}
    input_names = [md["name"] for md in subgraph["input_tensor_metadata"]]
    input_roles = [role_by_index[d["index"]] for d in interpreter.get_input_details()]
    assert dict(zip(input_roles, input_names, strict=True)) == conversion.TASK_LIBRARY_INPUT_NAMES
    assert sorted(input_names) == ["ids", "mask", "segment_ids"]

    role_by_index = {d["index"]: name for name, d in runner.get_output_details().items()}
    output_names = [md["name"] for md in subgraph["output_tensor_metadata"]]
    output_roles = [role_by_index[d["index"]] for d in interpreter.get_output_details()]
    assert output_names == output_roles
    assert sorted(output_names) == ["end_logits", "start_logits"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_task_library_answers_with_a_span_of_the_context(exported, variant):
    answers = task_library.answer_with_task_library(exported[variant].path, CONTEXT, QUESTION, top_k=3)
    assert 1 <= len(answers) <= 3
    for text, score in answers:
        assert text and text in CONTEXT
        assert isinstance(score, float)
    scores = [score for _, score in answers]
    assert scores == sorted(scores, reverse=True)


def test_task_library_top_k_must_be_positive(exported):
    with pytest.raises(ValueError, match="top_k"):
        task_library.answer_with_task_library(exported["none"].path, CONTEXT, QUESTION, top_k=0)


def test_task_library_check_reports_a_model_without_metadata(standin_dir, tmp_path):
    path = tmp_path / "bare.tflite"
    path.write_bytes(
        conversion.convert_saved_model(standin_dir, TfliteExportConfig(), QuantizationConfig.none())
    )
    problems = task_library.task_library_load_problems(str(path))
    assert len(problems) == 1
    assert "process unit" in problems[0]


def test_task_library_incompatibilities_are_empty_for_the_defaults():
    assert conversion.task_library_incompatibilities(TfliteExportConfig()) == []


@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        (TfliteExportConfig(seq_len=512), "512"),
        (TfliteExportConfig(query_len=128), "128"),
        (TfliteExportConfig(do_lower_case=False), "lower-cases"),
    ],
)
def test_task_library_incompatibilities_flag_each_difference(config, mentions):
    problems = conversion.task_library_incompatibilities(config)
    assert len(problems) == 1
    assert mentions in problems[0]


def test_export_for_another_seq_len_warns_and_still_runs(standin_dir, vocab_path, tmp_path, eval_windows):
    config = TfliteExportConfig(seq_len=128)
    result = tflite_export.export_tflite(
        standin_dir, vocab_path, str(tmp_path / "m.tflite"), config, QuantizationConfig.for_dynamic()
    )
    assert len(result.warnings) == 1 and "128" in result.warnings[0]
    runner = TfliteQaRunner(result.path)
    assert runner.seq_len == 128
    start, end = runner.run(*(eval_windows[name][:, :128] for name in conversion.INPUT_NAMES))
    assert start.shape == end.shape == (3, 128)


def test_int8_without_representative_windows_is_refused(standin_dir):
    with pytest.raises(ValueError, match="representative_windows"):
        conversion.convert_saved_model(standin_dir, TfliteExportConfig(), QuantizationConfig.for_int8())


def test_conversion_refuses_a_saved_model_without_logits_signature(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    with pytest.raises(ValueError, match="'logits' signature"):
        conversion.convert_saved_model(str(tmp_path), TfliteExportConfig(), QuantizationConfig.none())


def test_unknown_quantization_is_refused():
    with pytest.raises(ValueError, match="Unknown quantization"):
        QuantizationConfig.from_name("int4")


def _per_window(runner: TfliteQaRunner, windows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    names = conversion.INPUT_NAMES
    singles = [runner.run(*(row[name][None, :] for name in names)) for row in _rows(windows)]
    return np.concatenate([s for s, _ in singles]), np.concatenate([e for _, e in singles])


@pytest.fixture(scope="module")
def frozen_batch_exported(standin_dir, vocab_path, tmp_path_factory) -> dict[str, str]:
    """Every variant exported with the batch frozen at 1, as files are shipped."""
    out_dir = tmp_path_factory.mktemp("frozen")
    calibration = _rows(_windows(16, seed=1))
    return {
        name: tflite_export.export_tflite(
            standin_dir, vocab_path, str(out_dir / f"model_{name}.tflite"), TfliteExportConfig(resizable_batch=False),
            quantization, representative_windows=calibration,
        ).path
        for name, quantization in VARIANTS.items()
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_runner_batch_equals_per_window_when_the_batch_cannot_be_resized(frozen_batch_exported, variant,
                                                                         eval_windows):
    runner = TfliteQaRunner(frozen_batch_exported[variant])
    batched = runner.run(**eval_windows)
    # The static batch of 1 (and the attention reshapes it froze into the graph): one window at a time.
    assert runner.batching_supported is False
    for got, want in zip(batched, _per_window(runner, eval_windows), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def dense_standin_dir(tmp_path_factory) -> str:
    """A stand-in without attention: nothing in its graph pins the batch to 1."""
    return _save_standin(str(tmp_path_factory.mktemp("dense")), attention=False)


def _export_dense(dense_standin_dir: str, vocab_path: str, path: str, variant: str) -> str:
    config, quantization = TfliteExportConfig(resizable_batch=True), VARIANTS[variant]
    calibration = _rows(_windows(8, seed=3))
    return tflite_export.export_tflite(
        dense_standin_dir, vocab_path, path, config, quantization, representative_windows=calibration
    ).path


@pytest.mark.parametrize("variant", VARIANTS)
def test_runner_batch_equals_per_window_when_the_batch_resizes(
    variant, dense_standin_dir, vocab_path, tmp_path, eval_windows
):
    runner = TfliteQaRunner(_export_dense(dense_standin_dir, vocab_path, str(tmp_path / "m.tflite"), variant))
    batched = runner.run(**eval_windows)
    assert runner.batching_supported is True
    for got, want in zip(batched, _per_window(runner, eval_windows), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_runner_falls_back_when_batched_results_disagree(
    dense_standin_dir, vocab_path, tmp_path, eval_windows
):
    runner = TfliteQaRunner(_export_dense(dense_standin_dir, vocab_path, str(tmp_path / "m.tflite"), "none"))
    honest = runner._runners[runner.seq_len]

    def skewed_when_batched(**inputs):
        outputs = honest(**inputs)
        if len(inputs["input_word_ids"]) == 1:
            return outputs
        return {name: logits + 1.0 for name, logits in outputs.items()}

    runner._runners[runner.seq_len] = skewed_when_batched
    batched = runner.run(**eval_windows)
    assert runner.batching_supported is False
    for got, want in zip(batched, _per_window(runner, eval_windows), strict=True):
        np.testing.assert_array_equal(got, want)


def test_runner_pads_a_short_window_to_a_signature_and_rejects_a_window_longer_than_every_one(exported):
    runner = TfliteQaRunner(exported["none"].path)
    short = np.zeros((2, 100), np.int32)
    start, end = runner.run(short, short, short)
    assert start.shape == end.shape == (2, 100)  # run at 128, cut back to the window's 100 tokens
    long = np.zeros((2, 385), np.int32)
    with pytest.raises(ValueError, match="at most 384"):
        runner.run(long, long, long)
