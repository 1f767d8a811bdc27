"""One .tflite, one signature per window length (bertqa.on_device.signatures), on the tiny model.

Every variant is exported from one SavedModel of the tiny random model at seq_len 384, as the
pipeline exports it: signatures seq_384 (subgraph 0, the Task Library's) down to seq_128 over
one copy of the weights. A shorter signature must give the 384 signature's logits on the
tokens both see (the padding is masked out of attention), and the Task Library must still
answer from the file.
"""

from __future__ import annotations

import numpy as np
import pytest

from bertqa.data import windowing
from bertqa.data.raw_example import SquadExample
from bertqa.data.tokenization import TokenizerConfig, cached_tokenizer
from bertqa.data.windowing import WindowConfig
from bertqa.model import model_spec, serving, training
from bertqa.on_device import conversion, runtime, signatures, task_library, tflite_export
from bertqa.on_device.litert_answerer import LiteRtAnswerer

LENGTHS = (384, 320, 256, 224, 192, 176, 160, 128)
VARIANTS = ("none", "dynamic", "float16", "int8")
# float16 keeps the 384 signature alone (bertqa.on_device.conversion: the Task Library misreads float16
# weights shared by several signatures).
MULTI_SIGNATURE = ("none", "dynamic", "int8")
# How far a shorter signature's logits may be from the 384 signature's on the same tokens. Float
# variants: masked padding adds exp(-10000) = 0 to every softmax, so only the order of float sums
# differs. Dynamic range and int8 quantize activations per row (a token) or per tensor with the
# ranges calibrated for each subgraph, so a code may round the other way.
TOLERANCE = {"none": 1e-4, "float16": 1e-3, "dynamic": 2e-2, "int8": 0.1}
CONTEXT = ("the team played the final game of the season in denver on a cold night in february , and the "
           "coach said after the game that the players had worked hard all year long . ") * 8
QUESTION = "where did the team play the final game of the season"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, vocab_path) -> str:
    import tf_keras

    tf_keras.utils.set_random_seed(7)  # the same random model on every test worker (one that answers the probe)
    model = training.build_model(model_spec.get("tiny_random", dropout_rate=0.0))
    export_dir = str(tmp_path_factory.mktemp("saved_model"))
    serving.export_saved_model(model, vocab_path, True, WindowConfig(seq_len=384, query_len=64, doc_stride=128),
                               export_dir)
    return export_dir


@pytest.fixture(scope="module")
def windows(vocab_path) -> list[dict[str, np.ndarray]]:
    """Real windows of several lengths: the context cut to 1, 4 and 6 sentences, and all of it."""
    tokenizer = cached_tokenizer(TokenizerConfig(vocab_path, True))
    sentences = CONTEXT.split(" . ")
    examples = [SquadExample(id=str(n), title="t", context=" . ".join(sentences[:n]), question=QUESTION)
                for n in (1, 4, 6, len(sentences))]
    made, _ = windowing.make_windows(examples, tokenizer, WindowConfig(), is_training=False)
    return [{name: np.asarray(getattr(w, name), np.int32) for name in conversion.INPUT_NAMES} for w in made]


@pytest.fixture(scope="module")
def exported(saved_model, vocab_path, windows, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for variant in VARIANTS:
        result = tflite_export.export_tflite(
            saved_model, vocab_path, str(out / f"{variant}.tflite"), conversion.TfliteExportConfig(),
            conversion.QuantizationConfig.from_name(variant, representative_steps=4),
            representative_windows=windows if variant == "int8" else None)
        assert result.task_library_failures == (), result.task_library_failures
        paths[variant] = result.path
    return paths


def test_the_exporter_reads_the_lengths_the_saved_model_was_exported_for(saved_model, tmp_path, vocab_path):
    assert conversion.saved_model_window_lengths(saved_model, 384) == LENGTHS
    assert conversion.with_saved_model_lengths(conversion.TfliteExportConfig(window_lengths=()),
                                               saved_model).signature_lengths == LENGTHS
    model = training.build_model(model_spec.get("tiny_random"))
    serving.export_saved_model(model, vocab_path, True, WindowConfig(), str(tmp_path),
                               on_device_lengths=(256, 999, 128))
    assert conversion.saved_model_window_lengths(str(tmp_path), 384) == (384, 256, 128)


def _subgraphs(path: str):
    from tensorflow.lite.tools import flatbuffer_utils

    with open(path, "rb") as f:
        return flatbuffer_utils.convert_bytearray_to_object(bytearray(f.read()))


def test_the_windows_cover_several_signatures(windows):
    lengths = sorted(len(w["input_word_ids"]) for w in windows)
    assert lengths[0] <= 128 and 192 < lengths[-1] <= 384
    assert len({signatures.smallest_fitting(LENGTHS, n) for n in lengths}) >= 3


@pytest.mark.parametrize("variant", MULTI_SIGNATURE)
def test_every_variant_has_one_signature_per_length_and_384_is_subgraph_0(exported, variant):
    model = _subgraphs(exported[variant])
    first_input = model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]]
    assert list(first_input.shape) == [1, 384]
    keys = {s.signatureKey.decode(): s.subgraphIndex for s in model.signatureDefs}
    assert set(keys) == {signatures.signature_key(n) for n in LENGTHS}
    assert keys["seq_384"] == 0
    for key, index in keys.items():  # each signature's subgraph takes its own length
        graph = model.subgraphs[index]
        assert list(graph.tensors[graph.inputs[0]].shape) == [1, int(key.removeprefix("seq_"))]
    assert runtime.TfliteQaRunner(exported[variant]).seq_lens == tuple(sorted(LENGTHS))


def test_the_float16_file_keeps_the_384_signature_alone(exported):
    assert runtime.TfliteQaRunner(exported["float16"]).seq_lens == (384,)
    assert len(_subgraphs(exported["float16"]).subgraphs) == 1


@pytest.mark.parametrize("variant", MULTI_SIGNATURE)
def test_every_signature_gives_the_384_logits_on_the_tokens_it_shares(exported, windows, variant):
    interpreter = runtime.open_interpreter(exported[variant])
    runners = runtime.signature_runners(interpreter)
    compared = 0
    for window in windows:
        n = len(window["input_word_ids"])
        reference = runners[384](**conversion.pad_window(window, 384))
        for seq_len in (length for length in LENGTHS if n <= length < 384):
            outputs = runners[seq_len](**conversion.pad_window(window, seq_len))
            for name in conversion.OUTPUT_NAMES:
                np.testing.assert_allclose(outputs[name][0, :n], reference[name][0, :n],
                                           atol=TOLERANCE[variant], rtol=0, err_msg=f"{name} at {seq_len}")
            compared += 1
    assert compared >= 8


def test_the_runner_runs_each_window_at_the_smallest_signature_that_holds_it(exported, windows):
    runner = runtime.TfliteQaRunner(exported["none"])
    only_384 = runtime.TfliteQaRunner(exported["none"], lengths=(384,))
    for window in windows:
        n = len(window["input_word_ids"])
        assert runner.length_for(n) == min(length for length in LENGTHS if length >= n)
        start, end = runner.run(*(window[name][np.newaxis] for name in conversion.INPUT_NAMES))
        assert start.shape == end.shape == (1, n)
        start_384, _ = only_384.run(*(window[name][np.newaxis] for name in conversion.INPUT_NAMES))
        assert only_384.length_for(n) == 384
        np.testing.assert_allclose(start, start_384, atol=TOLERANCE["none"], rtol=0)
    with pytest.raises(ValueError, match="no signature for windows of \\[100\\]"):
        runtime.TfliteQaRunner(exported["none"], lengths=(100,))
    with pytest.raises(ValueError, match="at most 384"):
        runner.run(*(np.zeros((1, 385), np.int32),) * 3)


@pytest.mark.parametrize("variant", ["dynamic", "float16"])
def test_the_task_library_answers_from_the_file_with_the_384_signature(exported, variant):
    answerer = task_library.create_question_answerer(exported[variant])
    answers = answerer.answer(CONTEXT, QUESTION).answers
    assert answers, "the Task Library found no answer"
    assert all(answer.text and answer.text in CONTEXT for answer in answers)
    # Its logits are the 384 signature's, as LiteRT computes them for the same window.
    litert = LiteRtAnswerer(exported[variant], lengths=(384,)).answer(CONTEXT, QUESTION, top_k=1)
    assert litert
    assert abs(max(a.pos.logit for a in answers) - litert[0][1]) < 0.25 + 0.05 * abs(litert[0][1])


def test_litert_answers_the_same_at_the_question_length_as_at_384(exported):
    at_length = LiteRtAnswerer(exported["dynamic"]).answer(CONTEXT, QUESTION, top_k=3)
    at_384 = LiteRtAnswerer(exported["dynamic"], lengths=(384,)).answer(CONTEXT, QUESTION, top_k=3)
    assert [text for text, _ in at_length] == [text for text, _ in at_384]
    np.testing.assert_allclose([score for _, score in at_length], [score for _, score in at_384], atol=0.05)


def test_question_latencies_time_each_question_and_the_384_path(exported, windows):
    questions = [[w] for w in windows]
    own = runtime.question_latencies_seconds(exported["dynamic"], questions, warmup=1)
    only_384 = runtime.question_latencies_seconds(exported["dynamic"], questions, lengths=(384,), warmup=1)
    assert len(own) == len(only_384) == len(windows)
    assert all(seconds > 0 for seconds in own + only_384)
    assert runtime.percentile_ms(own, 50) > 0


def test_the_memory_probe_reports_the_file_in_litert(exported):
    memory = runtime.memory_mb(exported["dynamic"])
    assert memory["peak_mb"] >= memory["baseline_mb"] > 0
    assert memory["model_mb"] == pytest.approx(memory["peak_mb"] - memory["baseline_mb"], abs=0.2)


def test_a_shorter_signature_list_is_honoured_and_a_resizable_batch_keeps_one(saved_model):
    assert conversion.TfliteExportConfig(window_lengths=(256, 128, 999)).signature_lengths == (384, 256, 128)
    assert conversion.TfliteExportConfig(resizable_batch=True).signature_lengths == (384,)
    assert conversion.TfliteExportConfig(seq_len=64, query_len=16).signature_lengths == (64,)


def test_smallest_fitting_refuses_a_window_longer_than_every_length():
    assert signatures.smallest_fitting(LENGTHS, 129) == 160
    assert signatures.smallest_fitting(LENGTHS, 128) == 128
    with pytest.raises(ValueError, match="fits none"):
        signatures.smallest_fitting(LENGTHS, 385)
