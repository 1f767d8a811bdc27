"""Evaluation: windows -> logits (any model: SavedModel signature or TFLite) -> answers -> SQuAD metrics.

The same functions serve the pipeline's SquadEvaluator, the TFLite exporter's
re-evaluation of each variant, the `bertqa evaluate` command and the Model
Maker-style API.

`evaluate_tflite` is the fast path for an exported .tflite: one interpreter per CPU,
each taking every n-th window (in batches when the file has a resizable batch; shipped
files have a static one so that XNNPACK runs them, see bertqa.on_device.tflite_export), instead of
one interpreter for all windows as Model Maker's evaluate_tflite did. Windows are still padded to the
model's input length, so the file is scored exactly as the Task Library runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from bertqa.data import squad_io, windowing
from bertqa.data.raw_example import SquadExample, from_tf_example
from bertqa.data.tokenization import TokenizerConfig, cached_tokenizer
from bertqa.data.windowing import Window, window_from_tf_example
from bertqa.model import postprocess, squad_metrics

# f(input_word_ids, input_mask, input_type_ids), each int32 (batch, seq) -> (start, end) float (batch, seq)
LogitsFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    batch_size: int = 32


@dataclasses.dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    predictions: postprocess.Predictions


def read_records(file_pattern: str | Sequence[str]) -> list[bytes]:
    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else list(file_pattern)
    if not files:
        raise FileNotFoundError(f"no record files match {file_pattern}")
    return [record.numpy() for record in tf.data.TFRecordDataset(sorted(files), compression_type="GZIP")]


def read_examples(file_pattern) -> list[SquadExample]:
    return [from_tf_example(record) for record in read_records(file_pattern)]


def read_windows(file_pattern) -> list[Window]:
    return [window_from_tf_example(record) for record in read_records(file_pattern)]


def _padded(windows: Sequence[Window], field: str, length: int) -> np.ndarray:
    batch = np.zeros((len(windows), length), np.int32)  # (batch, length)
    for row, window in enumerate(windows):
        values = getattr(window, field)
        batch[row, : len(values)] = values
    return batch


def predict_logits(logits_fn: LogitsFn, windows: Sequence[Window], batch_size: int,
                   pad_to: int | None = None, progress: Callable[[int], None] | None = None,
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start/end logits per window, in the order of `windows`, each cut to the window's length.

    Windows are batched in order of length so each batch is padded only to its longest
    member (`pad_to` fixes the length instead, for models with a static input shape).
    """
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_word_ids))
    starts: list[np.ndarray] = [np.empty(0)] * len(windows)
    ends: list[np.ndarray] = [np.empty(0)] * len(windows)
    for first in range(0, len(order), batch_size):
        indices = order[first:first + batch_size]
        batch = [windows[i] for i in indices]
        length = pad_to or max(len(w.input_word_ids) for w in batch)
        start, end = logits_fn(_padded(batch, "input_word_ids", length), _padded(batch, "input_mask", length),
                               _padded(batch, "input_type_ids", length))
        for row, i in enumerate(indices):
            n = len(windows[i].input_word_ids)
            starts[i], ends[i] = np.asarray(start[row, :n]), np.asarray(end[row, :n])
        if progress:
            progress(len(batch))
    return starts, ends


def saved_model_logits_fn(saved_model_dir: str) -> LogitsFn:
    import tensorflow_text  # noqa: F401  (the SavedModel's serving graph uses its ops)

    from bertqa.model.serving import LOGITS_SIGNATURE

    signature = tf.saved_model.load(saved_model_dir).signatures[LOGITS_SIGNATURE]

    def logits_fn(ids, mask, type_ids):
        out = signature(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
                        input_type_ids=tf.constant(type_ids))
        return out["start_logits"].numpy(), out["end_logits"].numpy()

    return logits_fn


def score(examples: Sequence[SquadExample], windows: Sequence[Window], starts, ends,
          config: EvalConfig) -> EvalResult:
    predictions = postprocess.compute_predictions(
        examples, windows, starts, ends,
        postprocess.PostprocessConfig(n_best_size=config.n_best_size, max_answer_length=config.max_answer_length,
                                      version_2_with_negative=config.version_2_with_negative,
                                      null_score_diff_threshold=config.null_score_diff_threshold))
    if config.version_2_with_negative:
        metrics = squad_metrics.squad_v2_metrics(examples, predictions.answers, predictions.null_odds)
    else:
        metrics = squad_metrics.squad_v1_metrics(examples, predictions.answers)
    return EvalResult(metrics=metrics, predictions=predictions)


def evaluate(logits_fn: LogitsFn, examples: Sequence[SquadExample], windows: Sequence[Window],
             config: EvalConfig, pad_to: int | None = None, progress=None) -> EvalResult:
    starts, ends = predict_logits(logits_fn, windows, config.batch_size, pad_to=pad_to, progress=progress)
    return score(examples, windows, starts, ends, config)


# --- Fast paths for files on disk (the CLI, the exporter, Model Maker's evaluate_tflite) -------


def default_num_threads() -> int:
    """Every CPU this process may use: evaluation is the only work while it runs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def progress_bar(total: int, description: str, show: bool = True) -> Iterator[Callable[[int], None]]:
    """An `update(n)` callable drawing a tqdm bar on stderr (only when stderr is a terminal)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=description, unit="window", disable=None if show else True, leave=False) as bar:
        yield bar.update


def evaluate_saved_model(saved_model_dir: str, examples: Sequence[SquadExample], windows: Sequence[Window],
                         config: EvalConfig, show_progress: bool = True) -> EvalResult:
    """SQuAD metrics of a SavedModel through its `logits` signature (batches padded to their longest window)."""
    logits_fn = saved_model_logits_fn(saved_model_dir)
    with progress_bar(len(windows), "evaluating SavedModel", show_progress) as progress:
        return evaluate(logits_fn, examples, windows, config, progress=progress)


def squad_file_windows(path: str, tokenizer: TokenizerConfig, window: windowing.WindowConfig,
                       version_2_with_negative: bool = False, is_training: bool = False,
                       ) -> tuple[list[SquadExample], list[Window]]:
    """A SQuAD JSON file as examples and their windows, made as BertQATransform makes them."""
    examples, _ = squad_io.read_squad_file(
        path, squad_io.SquadReadConfig(version_2_with_negative=version_2_with_negative))
    windows, _ = windowing.make_windows(examples, cached_tokenizer(tokenizer), window, is_training)
    return examples, windows
