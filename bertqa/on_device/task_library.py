"""Answers questions with the TFLite Task Library, the way an app would run the exported model.

A thin wrapper around tflite-support's BertQuestionAnswerer, used to check that an
exported file really works with the Task Library (its own tokenizer from the packed
vocab.txt, its own windowing and span search), not only with our interpreter code.

What the Task Library does, so its answers can be read correctly: it splits the
context on spaces, lower-cases, fills one [1, 384] window ([CLS] question[:64]
[SEP] context [SEP], the rest truncated), takes the 5 best start and 5 best end
logits, keeps spans of at most 32 tokens inside the context, and returns each
answer as the original space-separated context words it covers, scored by
start_logit + end_logit, best first.
"""

from __future__ import annotations

import os


def _bert_question_answerer_class():
    # `import tflite_support` fails in this environment ("cannot initialize type
    # StatusCode"); the task submodule imports cleanly on its own.
    from tensorflow_lite_support.python.task.text import bert_question_answerer

    return bert_question_answerer.BertQuestionAnswerer


def create_question_answerer(tflite_path: str):
    """A BertQuestionAnswerer for a model with Task Library metadata; reuse it across questions."""
    if not os.path.isfile(tflite_path):
        raise FileNotFoundError(f"TFLite model {tflite_path} does not exist.")
    return _bert_question_answerer_class().create_from_file(tflite_path)


def answers_from(answerer, context: str, question: str, top_k: int = 1) -> list[tuple[str, float]]:
    """Up to `top_k` (answer text, score) pairs, best first; the score is start + end logit."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    result = answerer.answer(context, question)
    ranked = sorted(result.answers, key=lambda answer: answer.pos.logit, reverse=True)
    return [(answer.text, float(answer.pos.logit)) for answer in ranked[:top_k]]


def answer_with_task_library(
    tflite_path: str, context: str, question: str, top_k: int = 1
) -> list[tuple[str, float]]:
    """Loads the model and answers one question; empty when the Task Library finds no valid span."""
    return answers_from(create_question_answerer(tflite_path), context, question, top_k)


def task_library_load_problems(tflite_path: str) -> list[str]:
    """Why the Task Library cannot load and run this file (one tiny question); empty if it can.

    Only call this for models whose inputs are int32 [1, 384] and outputs float32:
    the Task Library aborts the whole process, rather than raising, when inference
    itself fails.
    """
    try:
        answer_with_task_library(tflite_path, "the answer is here", "where is the answer?")
    except (ImportError, ValueError, RuntimeError) as error:
        return [f"The Task Library's BertQuestionAnswerer cannot run the model: {error}"]
    return []


def median_answer_seconds(tflite_path: str, context: str, question: str, num_threads: int,
                          runs: int = 10, warmup: int = 2) -> float:
    """Median wall time of one BertQuestionAnswerer.answer() on `num_threads` threads.

    What an app's user waits for: the Task Library's own tokenization, its one window
    through its own TFLite runtime (with the XNNPACK delegate its runtime applies by
    default) and its span search; the median of `runs` calls after `warmup` untimed ones.
    Only for files the Task Library is known to run (see task_library_load_problems).
    """
    import statistics
    import time

    from tensorflow_lite_support.python.task.core.base_options import BaseOptions
    from tensorflow_lite_support.python.task.text import bert_question_answerer

    if runs < 1 or warmup < 0 or num_threads < 1:
        raise ValueError(f"runs and num_threads must be at least 1 and warmup at least 0, got {runs}, "
                         f"{num_threads} and {warmup}.")
    if not os.path.isfile(tflite_path):
        raise FileNotFoundError(f"TFLite model {tflite_path} does not exist.")
    answerer = bert_question_answerer.BertQuestionAnswerer.create_from_options(
        bert_question_answerer.BertQuestionAnswererOptions(
            base_options=BaseOptions(file_name=tflite_path, num_threads=num_threads)))
    for _ in range(warmup):
        answerer.answer(context, question)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        answerer.answer(context, question)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)
