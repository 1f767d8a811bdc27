"""export_tflite: convert, quantize, add the Task Library's metadata, prove the Task Library runs it, write.

The steps are the other on_device modules' (conversion, per_channel, task_metadata); this one
orders them and asks the Task Library a probe question before the file is written.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf

from bertqa.on_device.conversion import (
    INPUT_NAMES,
    ExportResult,
    QuantizationConfig,
    TfliteExportConfig,
    convert_saved_model,
    pad_window,
    task_library_incompatibilities,
)
from bertqa.on_device.runtime import signature_runner
from bertqa.on_device.task_metadata import add_task_library_metadata, local_vocab, task_library_io_problems

_log = logging.getLogger(__name__)


def _write_bytes(content: bytes, output_path: str) -> None:
    parent = os.path.dirname(output_path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(output_path, "wb") as f:
        f.write(content)


# A question whose WordPiece tokens are the same for our tokenizer and the Task Library's
# (lower-case ASCII words), so both feed the model the same ids.
_PROBE_QUESTION = "where did the team play the final game of the season"
_PROBE_CONTEXT = ("the team played the final game of the season in denver on a cold night in february , "
                  "and the coach said after the game that the players had worked hard all year long .")
# How far the Task Library's logit of an answer may be from the interpreter's: 0.25 + 5% of
# the logit. The Task Library's runtime is an older TFLite whose hybrid (dynamic-range)
# kernels round activations slightly differently, and a flipped int8 code propagates: 0.126
# on a logit of about 8 was seen for a correctly read file. A runtime that reads the file
# otherwise is off by far more (per-channel parameters misread: 1.04 against 2.51).
_LOGIT_TOLERANCE = 0.25
_LOGIT_RELATIVE_TOLERANCE = 0.05


def _task_library_run_problems(model: bytes, scratch_dir: str, vocab_path: str, config: TfliteExportConfig,
                               ) -> list[str]:
    """Why the Task Library cannot run the file, or runs it otherwise than TensorFlow Lite's interpreter.

    Proves on the spot that the Task Library loads the file and answers (e.g. that every
    op of this quantization has a kernel its builtin op resolver knows), and that the
    span logits it answers with are the ones the interpreter computes: the metrics of the
    file are measured with the interpreter, and the app runs the Task Library's own
    TFLite runtime. Only for models without known problems: feeding those could abort
    the process.
    """
    from bertqa.data import windowing
    from bertqa.data.raw_example import SquadExample
    from bertqa.data.tokenization import TokenizerConfig, cached_tokenizer
    from bertqa.on_device.task_library import create_question_answerer, task_library_load_problems

    local = os.path.join(scratch_dir, "task_library_check.tflite")
    with open(local, "wb") as f:
        f.write(model)
    problems = task_library_load_problems(local)
    if problems:
        return problems
    # The probe windowed as the pipeline windows text; it fits one window, as it does for the Task Library.
    probe = SquadExample(id="probe", title="probe", context=_PROBE_CONTEXT, question=_PROBE_QUESTION)
    (window,), _ = windowing.make_windows(
        [probe], cached_tokenizer(TokenizerConfig(vocab_path, config.do_lower_case)),
        windowing.WindowConfig(seq_len=config.seq_len, query_len=config.query_len), is_training=False)
    inputs = pad_window({name: np.asarray(getattr(window, name)) for name in INPUT_NAMES}, config.seq_len)
    outputs = signature_runner(tf.lite.Interpreter(model_path=local))(**inputs)
    starts, ends = outputs["start_logits"][0], outputs["end_logits"][0]
    answers = create_question_answerer(local).answer(_PROBE_CONTEXT, _PROBE_QUESTION).answers
    if not answers:
        # An untrained model may put every top start after every top end; then there is nothing to
        # compare, which says nothing about the runtime.
        _log.info("The Task Library found no answer to the probe question; its logits were not compared.")
        return []
    expected = [float(starts[a.pos.start] + ends[a.pos.end]) for a in answers]
    gaps = [abs(a.pos.logit - want) for a, want in zip(answers, expected, strict=True)]
    limits = [_LOGIT_TOLERANCE + _LOGIT_RELATIVE_TOLERANCE * abs(want) for want in expected]
    if any(gap > limit for gap, limit in zip(gaps, limits, strict=True)):
        return [f"The Task Library's BertQuestionAnswerer runs the model otherwise than TensorFlow Lite's "
                f"interpreter (its answer logits differ by up to {max(gaps):.3f} on a probe question): its "
                "runtime reads some op of this file differently, so the metrics measured here would not hold "
                "in an app."]
    return []


def export_tflite(
    saved_model_dir: str,
    vocab_path: str,
    output_path: str,
    config: TfliteExportConfig,
    quantization: QuantizationConfig,
    representative_windows: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> ExportResult:
    """Converts, quantizes and annotates the model, and writes it to `output_path`.

    The file is written even when the Task Library cannot run it faithfully (our own
    TfliteQaRunner can); `warnings` then says why. A model without known problems is
    loaded and asked a probe question through the Task Library before returning, and
    the logits of its answers are compared with the interpreter's.
    """
    model = convert_saved_model(saved_model_dir, config, quantization, representative_windows)
    incompatibilities = task_library_incompatibilities(config)
    failures = task_library_io_problems(model)
    with tempfile.TemporaryDirectory() as scratch:
        vocab = local_vocab(vocab_path, scratch)
        model = add_task_library_metadata(model, vocab)
        if not incompatibilities and not failures:
            failures += _task_library_run_problems(model, scratch, vocab, config)
    _write_bytes(model, output_path)
    warnings = incompatibilities + failures
    for warning in warnings:
        _log.warning("%s: %s", output_path, warning)
    return ExportResult(path=output_path, size_bytes=len(model), warnings=tuple(warnings),
                        task_library_failures=tuple(failures))
