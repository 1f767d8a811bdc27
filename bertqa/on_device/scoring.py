"""SQuAD metrics of an exported .tflite: the fast path of `bertqa evaluate`, the exporter and Model Maker.

One interpreter per CPU, each taking every n-th window (in batches when the file has a
resizable batch; shipped files have a static one so that XNNPACK runs them, see
bertqa.on_device.conversion), instead of one interpreter for all windows as Model Maker's
evaluate_tflite did. Each window runs at the smallest of the file's signatures that holds it,
as an app on LiteRT runs it (bertqa.on_device.signatures); `lengths=(384,)` scores every window
at 384 tokens, as the Task Library runs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from bertqa.data.raw_example import SquadExample
from bertqa.data.windowing import Window
from bertqa.model.evaluation import (
    EvalConfig,
    EvalResult,
    default_num_threads,
    predict_logits,
    progress_bar,
    score,
)
from bertqa.on_device.runtime import DEFAULT_RUNTIME, TfliteQaRunner

# Windows per TFLite run. Padded to 384 tokens a window already is a large matrix product,
# so bigger batches barely help on a CPU, while attention scores grow as batch x 384 x 384
# per head (benchmarks/RESULTS.md).
DEFAULT_TFLITE_BATCH_SIZE = 8


def evaluate_tflite(tflite_path: str, examples: Sequence[SquadExample], windows: Sequence[Window],
                    config: EvalConfig, num_threads: int | None = None,
                    batch_size: int = DEFAULT_TFLITE_BATCH_SIZE, show_progress: bool = True,
                    runtime: str = DEFAULT_RUNTIME, lengths: tuple[int, ...] | None = None) -> EvalResult:
    """SQuAD metrics of an exported .tflite (its logits from tflite_logits, with the same arguments)."""
    starts, ends = tflite_logits(tflite_path, windows, num_threads, batch_size, show_progress, runtime, lengths)
    return score(examples, windows, starts, ends, config)


def tflite_logits(tflite_path: str, windows: Sequence[Window], num_threads: int | None = None,
                  batch_size: int = DEFAULT_TFLITE_BATCH_SIZE, show_progress: bool = True,
                  runtime: str = DEFAULT_RUNTIME, lengths: tuple[int, ...] | None = None,
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of each window from an exported .tflite, run in batches by `num_threads`
    interpreters at once.

    Each of the `num_threads` (None: every CPU) interpreters runs on one CPU thread and takes every
    num_threads-th window. Separate interpreters rather than one interpreter with several threads:
    TFLite's hybrid kernels, which run the dynamic-range model, use one thread whatever the
    interpreter's num_threads says (190 vs 196 ms per window at 1 and 2 threads,
    benchmarks/RESULTS.md), and invoke() releases the GIL, so Python threads each driving their own
    interpreter keep every CPU busy for every variant. Each window is computed exactly as alone.
    `runtime`: the TFLite runtime that runs the file (bertqa.on_device.runtime.RUNTIMES; LiteRT by default).
    `lengths`: the signatures windows may run at (None: all; each window at the smallest that holds it).
    """
    from concurrent.futures import ThreadPoolExecutor

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    workers = max(1, min(num_threads or default_num_threads(), len(windows)))
    runners = [TfliteQaRunner(tflite_path, num_threads=1, runtime=runtime, lengths=lengths) for _ in range(workers)]
    longest = max((len(w.input_word_ids) for w in windows), default=0)
    if longest > runners[0].seq_len:
        raise ValueError(f"{tflite_path} takes {runners[0].seq_len} tokens, but the data has windows of {longest}; "
                         "window the data with the seq_len the model was exported for.")
    shards = [list(range(worker, len(windows), workers)) for worker in range(workers)]
    starts: list[np.ndarray] = [np.empty(0)] * len(windows)
    ends: list[np.ndarray] = [np.empty(0)] * len(windows)
    with progress_bar(len(windows), f"evaluating {os.path.basename(tflite_path)}", show_progress) as progress:
        def run_shard(worker: int) -> None:
            shard = shards[worker]
            # Batches of similar lengths (predict_logits sorts by length), each padded by the runner to the
            # smallest signature that holds its longest window.
            shard_starts, shard_ends = predict_logits(runners[worker].run, [windows[i] for i in shard], batch_size,
                                                      progress=progress)
            for i, start, end in zip(shard, shard_starts, shard_ends, strict=True):
                starts[i], ends[i] = start, end

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run_shard, range(workers)))  # list(): re-raises a worker's exception here
    return starts, ends


def app_answers(examples: Sequence[SquadExample], windows: Sequence[Window], starts, ends,
                config: EvalConfig) -> dict[str, str]:
    """The best answer to each question as an app shows it (postprocess.PostprocessConfig.whole_words):
    the span the SQuAD metric scores, widened to the whole words it cuts into, as the Task Library does."""
    from bertqa.model import postprocess

    settings = postprocess.PostprocessConfig(
        n_best_size=config.n_best_size, max_answer_length=config.max_answer_length,
        version_2_with_negative=config.version_2_with_negative,
        null_score_diff_threshold=config.null_score_diff_threshold, whole_words=True)
    return postprocess.compute_predictions(examples, windows, starts, ends, settings).answers


def evaluate_with_task_library(tflite_path: str, examples: Sequence[SquadExample], config: EvalConfig,
                               show_progress: bool = True) -> EvalResult:
    """SQuAD 1.1 metrics of a .tflite as the Task Library's BertQuestionAnswerer answers (one answer() each).

    Its own tokenizer, its one window of the first 384 tokens and its span search: what an app on
    the Task Library shows. The top answer of each question is scored; predictions carry no n-best.
    """
    from bertqa.model import postprocess, squad_metrics
    from bertqa.on_device.task_library import answers_from, create_question_answerer

    if config.version_2_with_negative:
        raise ValueError("the Task Library always answers: SQuAD 2.0 metrics need no-answer predictions")
    answerer = create_question_answerer(tflite_path)
    answers = {}
    with progress_bar(len(examples), f"Task Library on {os.path.basename(tflite_path)}", show_progress) as progress:
        for example in examples:
            found = answers_from(answerer, example.context, example.question, top_k=1)
            answers[example.id] = found[0][0] if found else ""
            progress(1)
    metrics = squad_metrics.squad_v1_metrics(examples, answers)
    return EvalResult(metrics=metrics, predictions=postprocess.Predictions(answers=answers, nbest={}, null_odds={}))


def answer_agreement(examples: Sequence[SquadExample], answers: Mapping[str, str], others: Mapping[str, str]) -> float:
    """The share of `examples` (0-1) whose two answers are the same non-empty text once SQuAD-normalized
    (case, punctuation, articles, spaces): the Task Library returns whole words with their punctuation
    where the project's decoding returns the tokens' span, which is the same answer to the metric.

    Two empty answers (both runtimes answered nothing, or an answer normalizes to nothing) do not
    agree: a file that answers nothing anywhere would otherwise agree 100% with another such file."""
    from bertqa.model import squad_metrics

    if not examples:
        raise ValueError("there are no examples to compare answers on")
    same = 0
    for e in examples:
        answer, other = answers.get(e.id, ""), others.get(e.id, "")
        if squad_metrics.normalize_answer(answer) and squad_metrics.exact_match(answer, other):
            same += 1
    return same / len(examples)
