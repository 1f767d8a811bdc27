"""Tests for bertqa.data.serving_windows: in-graph windows identical to make_windows, and SavedModel export."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tf_text ops a reloaded SavedModel needs)

from bertqa.data.raw_example import SquadExample
from bertqa.data.serving_windows import ServingWindower
from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer, char_to_byte_offsets
from bertqa.data.windowing import Window, WindowConfig, make_windows
from bertqa.model import model_cache

SMALL = WindowConfig(seq_len=48, query_len=12, doc_stride=16)

DENVER = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football "
    "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
    "defeated the National Football Conference (NFC) champion Carolina Panthers 24–10 to earn their "
    "third Super Bowl title."
)
BEYONCE = (
    "Beyoncé Giselle Knowles-Carter (/biːˈjɒnseɪ/ bee-YON-say; born September 4, 1981) is an American "
    "singer, songwriter and actress. Née à Houston, she performed in various singing and dancing "
    "competitions — 北京 and 東京 tours followed 😀, and cafe\u0301 concerts in Zürich."
)
LONG = " ".join([DENVER, BEYONCE, DENVER.upper(), BEYONCE] * 3)


@pytest.fixture(scope="module")
def vocab_path() -> str:
    return str(model_cache.default_model_dir() / "vocab.txt")


@pytest.fixture(scope="module")
def tokenizer(vocab_path) -> WordPieceTokenizer:
    return WordPieceTokenizer(TokenizerConfig(vocab_path, do_lower_case=True))


@pytest.fixture(scope="module")
def windowers(vocab_path) -> dict[str, ServingWindower]:
    return {
        "default": ServingWindower(vocab_path, do_lower_case=True, config=WindowConfig()),
        "small": ServingWindower(vocab_path, do_lower_case=True, config=SMALL),
    }


def _python_windows(tokenizer, config, question, context, answer=None) -> list[Window]:
    answers = {} if answer is None else dict(answer_texts=(answer,), answer_starts=(context.index(answer),))
    example = SquadExample(id="q", title="t", context=context, question=question, **answers)
    windows, _ = make_windows([example], tokenizer, config, is_training=answer is not None)
    return windows


def _padded(values, length: int, fill: int) -> list[int]:
    return [*values, *[fill] * (length - len(values))]


def _assert_parity(outputs: dict[str, np.ndarray], windows: list[Window], context: str, seq_len: int):
    assert outputs["input_word_ids"].shape == (len(windows), seq_len)
    for row, window in enumerate(windows):
        for name in ("input_word_ids", "input_mask", "input_type_ids", "token_is_max_context"):
            assert outputs[name][row].tolist() == _padded(getattr(window, name), seq_len, 0), (row, name)
        for name, char_offsets in (
            ("token_byte_starts", window.token_char_starts),
            ("token_byte_ends", window.token_char_ends),
        ):
            byte_offsets = char_to_byte_offsets(context, char_offsets).tolist()
            assert outputs[name][row].tolist() == _padded(byte_offsets, seq_len, -1), (row, name)


@pytest.mark.parametrize(
    ("config_name", "question", "context", "min_windows"),
    [
        ("default", "Which NFL team represented the AFC at Super Bowl 50?", DENVER, 1),
        ("default", "When was Beyoncé born, and where?", BEYONCE, 1),
        ("default", "Who won Super Bowl 50?", LONG, 3),
        ("small", "Which team won?", LONG, 3),
        ("small", "Where did Beyoncé perform in 東京 and in Zürich?", BEYONCE, 3),
        ("small", "why " * 30 + "?", DENVER, 3),  # question truncated to query_len
        ("small", "Who?", "", 1),
    ],
    ids=["ascii", "non-ascii", "long-default", "long-small", "non-ascii-small", "long-question", "empty"],
)
def test_serving_windows_match_make_windows(
    tokenizer, windowers, config_name, question, context, min_windows
):
    windower = windowers[config_name]
    windows = _python_windows(tokenizer, windower.config, question, context)
    assert len(windows) >= min_windows
    outputs = {k: v.numpy() for k, v in windower(tf.constant(question), tf.constant(context)).items()}
    _assert_parity(outputs, windows, context, windower.config.seq_len)


def test_output_dtypes_and_static_width(windowers):
    outputs = windowers["small"](tf.constant("Who?"), tf.constant(DENVER))
    dtypes = {name: tensor.dtype for name, tensor in outputs.items()}
    assert dtypes == {
        "input_word_ids": tf.int32,
        "input_mask": tf.int32,
        "input_type_ids": tf.int32,
        "token_byte_starts": tf.int64,
        "token_byte_ends": tf.int64,
        "token_is_max_context": tf.int32,
    }
    concrete = windowers["small"].__call__.get_concrete_function()
    assert concrete.structured_outputs["input_word_ids"].shape.as_list() == [None, SMALL.seq_len]


def test_byte_offsets_cut_the_answer_inside_the_graph(tokenizer, windowers):
    windower = windowers["small"]
    question, answer = "When was Beyoncé born?", "Giselle Knowles-Carter (/biːˈjɒnseɪ/"
    labelled = [
        w for w in _python_windows(tokenizer, SMALL, question, BEYONCE, answer=answer) if w.start_position
    ]
    assert labelled
    outputs = windower(tf.constant(question), tf.constant(BEYONCE))
    window = labelled[0]
    start = outputs["token_byte_starts"][window.window_index, window.start_position]
    end = outputs["token_byte_ends"][window.window_index, window.end_position]
    assert tf.strings.substr(tf.constant(BEYONCE), start, end - start).numpy().decode("utf-8") == answer


def test_saved_model_round_trip_carries_vocab_and_gives_same_windows(tmp_path, vocab_path):
    source_vocab = tmp_path / "source" / "vocab.txt"
    source_vocab.parent.mkdir()
    shutil.copy(vocab_path, source_vocab)

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.windower = ServingWindower(str(source_vocab), do_lower_case=True, config=SMALL)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string)])
        def serve(self, question, context):
            return self.windower(question, context)

    module = Exported()
    question, context = "Where did Beyoncé perform?", BEYONCE
    expected = {k: v.numpy() for k, v in module.serve(tf.constant(question), tf.constant(context)).items()}
    export_dir = tmp_path / "saved_model"
    tf.saved_model.save(module, str(export_dir))
    source_vocab.unlink()  # the reloaded model must not need the original file

    with open(vocab_path, "rb") as f:
        assert (export_dir / "assets" / "vocab.txt").read_bytes() == f.read()
    reloaded = tf.saved_model.load(str(export_dir))
    got = {k: v.numpy() for k, v in reloaded.serve(tf.constant(question), tf.constant(context)).items()}
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert expected["input_word_ids"].shape[0] >= 3
    assert reloaded.windower.vocab_file.asset_path.numpy().decode().endswith("assets/vocab.txt")
