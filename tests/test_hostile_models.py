"""`bertqa predict` and `bertqa evaluate` given model files that are damaged or of another model.

Each must stop with exit status 2 and one `error:` line on stderr naming the path, with no
traceback, and above all without the interpreter dying: before bertqa.on_device.model_files checked
the files, a truncated .tflite made `tf.lite.Interpreter` segfault in `bertqa evaluate`.
So the real CLI runs in a subprocess, where a crash shows as a negative return code.

The valid model is tiny_random's encoder and span head, trained for 120 steps on code-word
questions (tests/synthetic_spans.py) so that `bertqa predict` has a right answer to print, and
exported as the pipeline exports it (bertqa.model.serving, then bertqa.on_device.tflite_export);
the hostile files are cut from it or built beside it. All CLI runs happen at once in one module
fixture, a few at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from synthetic_spans import QUESTION, UNSEEN, squad_document

from bertqa.on_device import model_files

ERROR_EXIT = 2  # bertqa's exit status for a user error (cli.main)
COMMANDS = ("predict", "evaluate")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Three times the steps after which the tiny model answers the code-word questions (synthetic_spans.py).
TRAIN_STEPS = 120

# case -> what the one error line must say, per command (one phrase for both, or a dict).
CASES = {
    "truncated_to_0_bytes": "an empty file (0 bytes)",
    "truncated_to_100_bytes": "truncated or corrupt TFLite file",
    "truncated_to_half": "truncated or corrupt TFLite file",
    "last_byte_cut": "truncated or corrupt",  # the flatbuffer survives; the packed vocab.txt does not
    "random_bytes": "not a TFLite model",
    "random_bytes_behind_tfl3": "truncated or corrupt TFLite file",
    # predict runs a .tflite in LiteRT (which needs no metadata but the vocabulary) unless told otherwise.
    "no_metadata": {"predict": "--vocab vocab.txt", "evaluate": "--vocab vocab.txt"},
    "dense_model": "not a BERT question-answering model",
    "dense_model_with_metadata": "not a BERT question-answering model",
    "ten_logits_with_bert_metadata": "not a BERT question-answering model",
    "empty_directory": "neither a .tflite file nor a SavedModel directory",
    "directory_of_random_files": "neither a .tflite file nor a SavedModel directory",
    "text_file": "neither a .tflite file nor a SavedModel directory",
    "corrupt_saved_model_pb": "not a readable SavedModel",
    "saved_model_of_another_model": "not a SavedModel of the bertqa trainer",
    "nonexistent_tflite": "no such file or directory",
    "nonexistent_directory": "no such file or directory",
}
# Which tensors (or signature) the wrong models have: the message must say so.
HAS = {
    "dense_model": "float32[1, 4]",
    "dense_model_with_metadata": "float32[1, 4]",
    "ten_logits_with_bert_metadata": "float32[1, 10]",
    "saved_model_of_another_model": "x: float32",
}


def _tiny_models(directory: str) -> dict[str, str]:
    """The valid tiny model (SavedModel, .tflite with metadata, the same without) and other models."""
    import tensorflow as tf
    import tf_keras as keras
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info, metadata_writer

    from bertqa.model import model_spec, serving, training
    from bertqa.model_maker.data_loader import DataLoader
    from bertqa.on_device import conversion, task_metadata

    spec = model_spec.get("tiny_random")
    vocab = spec.resolved_vocab_path()
    tf.keras.utils.set_random_seed(3)
    paths = {"saved_model": os.path.join(directory, "saved_model"), "vocab": vocab}
    code_words = os.path.join(directory, "code_words.json")
    with open(code_words, "w") as f:
        json.dump(squad_document(97, 100), f)
    windows = DataLoader.from_squad(code_words, "tiny_random", is_training=True, cache_dir=directory)
    model = training.build_model(spec)
    training.train(model, [windows.record_file], training.train_config(spec, spec.default_batch_size, TRAIN_STEPS))
    serving.export_saved_model(model, vocab, True, spec.window_config(), paths["saved_model"],
                               on_device_lengths=spec.on_device_lengths)
    bare = conversion.convert_saved_model(paths["saved_model"], conversion.TfliteExportConfig(),
                                             conversion.QuantizationConfig.none())
    files = {"model.tflite": task_metadata.add_task_library_metadata(bare, vocab), "no_metadata.tflite": bare}

    dense = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
    files["dense.tflite"] = tf.lite.TFLiteConverter.from_keras_model(dense).convert()
    writer = metadata_writer.MetadataWriter.create_from_metadata(
        bytearray(files["dense.tflite"]), model_metadata=metadata_info.GeneralMd(name="dense").create_metadata(),
        associated_files=[vocab])
    with warnings.catch_warnings():  # "vocab.txt does not exist in the metadata": no tensor refers to it, as meant
        warnings.simplefilter("ignore", UserWarning)
        files["dense_metadata.tflite"] = bytes(writer.populate())

    class TenLogits(tf.Module):  # the contract's names and inputs, but 10 logits instead of 384
        @tf.function(input_signature=[tf.TensorSpec([1, 384], tf.int32, name=name)
                                      for name in conversion.INPUT_NAMES])
        def __call__(self, input_word_ids, input_mask, input_type_ids):
            x = tf.cast(input_word_ids[:, :10] + input_mask[:, :10] + input_type_ids[:, :10], tf.float32)
            return {"start_logits": x, "end_logits": -x}

    ten = TenLogits()
    converted = tf.lite.TFLiteConverter.from_concrete_functions([ten.__call__.get_concrete_function()], ten).convert()
    files["ten_logits.tflite"] = task_metadata.add_task_library_metadata(converted, vocab)

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return {"y": 2 * x}

    doubler = Doubler()
    paths["other_saved_model"] = os.path.join(directory, "other_saved_model")
    tf.saved_model.save(doubler, paths["other_saved_model"],
                        signatures={"serving_default": doubler.__call__.get_concrete_function()})
    for name, content in files.items():
        paths[name] = os.path.join(directory, name)
        with open(paths[name], "wb") as f:
            f.write(content)
    return paths


def _hostile_paths(directory: str, models: dict[str, str]) -> dict[str, str]:
    with open(models["model.tflite"], "rb") as f:
        good = f.read()
    rng = np.random.default_rng(0)
    contents = {
        "truncated_to_0_bytes": good[:0],
        "truncated_to_100_bytes": good[:100],
        "truncated_to_half": good[: len(good) // 2],
        "last_byte_cut": good[:-1],
        "random_bytes": rng.bytes(5000),
        "random_bytes_behind_tfl3": rng.bytes(4) + b"TFL3" + rng.bytes(5000),
    }
    paths = {}
    for case, content in contents.items():
        paths[case] = os.path.join(directory, f"{case}.tflite")
        with open(paths[case], "wb") as f:
            f.write(content)
    paths.update(no_metadata=models["no_metadata.tflite"], dense_model=models["dense.tflite"],
                 dense_model_with_metadata=models["dense_metadata.tflite"],
                 ten_logits_with_bert_metadata=models["ten_logits.tflite"],
                 saved_model_of_another_model=models["other_saved_model"])
    for case in ("empty_directory", "directory_of_random_files", "corrupt_saved_model_pb"):
        paths[case] = os.path.join(directory, case)
        os.makedirs(paths[case])
    for name in ("variables.data", "model.bin", "notes"):
        with open(os.path.join(paths["directory_of_random_files"], name), "wb") as f:
            f.write(rng.bytes(300))
    with open(os.path.join(paths["corrupt_saved_model_pb"], "saved_model.pb"), "wb") as f:
        f.write(rng.bytes(3000))
    paths["text_file"] = os.path.join(directory, "model.txt")
    with open(paths["text_file"], "w") as f:
        f.write("not a model\n")
    paths["nonexistent_tflite"] = os.path.join(directory, "missing", "model.tflite")
    paths["nonexistent_directory"] = os.path.join(directory, "no_such_saved_model")
    assert set(paths) == set(CASES)
    return paths


def _argv(command: str, model: str, data: str) -> list[str]:
    if command == "predict":
        return ["predict", "--model", model, "--context", UNSEEN[1][0], "--question", QUESTION]
    return ["evaluate", "--model", model, "--data", data]


def _cli(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "bertqa_cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    return _tiny_models(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory, fixtures_dir) -> dict[tuple[str, str], tuple[str, subprocess.CompletedProcess]]:
    """(case, command) -> (model path, finished CLI run), for every hostile case and the valid model."""
    paths = _hostile_paths(str(tmp_path_factory.mktemp("hostile")), models)
    paths["valid"] = models["model.tflite"]
    data = str(fixtures_dir / "tiny_eval.json")
    jobs = [("valid", "predict")] + [(case, command) for case in CASES for command in COMMANDS]
    with ThreadPoolExecutor(max_workers=4) as pool:  # the refusals take well under a second each
        done = pool.map(lambda job: _cli(_argv(job[1], paths[job[0]], data)), jobs)
        return {job: (paths[job[0]], result) for job, result in zip(jobs, done, strict=True)}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES)
def test_hostile_model_gives_one_error_line_and_exit_status_2(runs, case, command):
    path, result = runs[case, command]
    assert result.returncode >= 0, f"killed by signal {-result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == ERROR_EXIT, result.stderr[-3000:]
    assert result.stdout == ""
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert path in line
    expected = CASES[case] if isinstance(CASES[case], str) else CASES[case][command]
    assert expected in line
    if case in HAS:  # what the model has, and what it needs
        assert HAS[case] in line and "it needs" in line


def test_the_valid_tiny_model_answers(runs):
    """`bertqa predict` with the valid .tflite prints the code word of a context the model never saw."""
    _, result = runs["valid", "predict"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error:" not in result.stderr and "Traceback" not in result.stderr
    # One line: the answer (whole words of the context, the period included), a tab, its score;
    # "(no answer)" when the model ranks no valid span.
    text, _, score = result.stdout.strip().partition("\t")
    assert text.rstrip(".") == UNSEEN[1][1] and score.startswith("(score "), result.stdout


def test_the_checks_accept_the_valid_files(models):
    for check in (model_files.check_tflite_for_task_library,
                  lambda path: model_files.check_tflite_for_evaluation(path, vocab_given=False)):
        model = check(models["model.tflite"])
        assert model.seq_len == 384 and model.has_packed_vocab
    # Without metadata the file still runs in the interpreter, given the vocabulary.
    assert model_files.check_tflite_for_evaluation(models["no_metadata.tflite"], vocab_given=True).seq_len == 384
    for signature in (model_files.SERVING_SIGNATURE, model_files.LOGITS_SIGNATURE):
        model_files.check_saved_model(models["saved_model"], signature)


def test_the_checks_read_what_tensorflow_reads(models):
    """model_files keeps its own copy of the export contract and of the SavedModel signature fields."""
    import tensorflow as tf

    from bertqa.model import serving
    from bertqa.on_device import conversion

    assert model_files.INPUT_NAMES == conversion.INPUT_NAMES
    assert model_files.OUTPUT_NAMES == conversion.OUTPUT_NAMES
    assert model_files.TASK_LIBRARY_INPUT_NAMES == conversion.TASK_LIBRARY_INPUT_NAMES
    assert model_files.TASK_LIBRARY_OUTPUT_NAMES == conversion.TASK_LIBRARY_OUTPUT_NAMES
    assert model_files.TASK_LIBRARY_SEQ_LEN == conversion.TASK_LIBRARY_SEQ_LEN
    assert model_files.LOGITS_SIGNATURE == serving.LOGITS_SIGNATURE
    loaded = tf.saved_model.load(models["saved_model"])
    expected = {
        name: ({key: spec.dtype.name for key, spec in function.structured_input_signature[1].items()},
               {key: spec.dtype.name for key, spec in function.structured_outputs.items()})
        for name, function in loaded.signatures.items()}
    found = model_files.saved_model_signatures(models["saved_model"])
    assert {name: found[name] for name in expected} == expected
