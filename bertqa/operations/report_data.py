"""What the run report shows, as plain data: per-question scores and the slices built from them,
the training curve read back from TensorBoard logs, and a TFMA EvalResult of the slices.

Pure functions over plain data (no TFX); bertqa.operations.run_report draws the page from them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence

from bertqa.data.raw_example import SquadExample
from bertqa.model import squad_metrics

QUESTION_WORDS = ("what", "who", "when", "where", "which", "how", "why")
OTHER = "other"
NO_ANSWER = "no answer"
_WORD = re.compile(r"[a-z]+")


@dataclasses.dataclass(frozen=True)
class QuestionScore:
    """One eval question's official SQuAD scores (0-100, max over its gold answers)."""

    id: str
    title: str
    question: str
    context_words: int
    gold: tuple[str, ...]
    predicted: str
    exact_match: float
    f1: float
    baseline_predicted: str | None = None
    baseline_f1: float | None = None


def score_questions(examples: Sequence[SquadExample], answers: Mapping[str, str], version_2: bool = False,
                    baseline_answers: Mapping[str, str] | None = None) -> list[QuestionScore]:
    """Per-question EM and F1 with the official metric functions; averaged over all questions
    they give exactly the evaluator's figures (a question without a prediction scores 0)."""
    f1_metric = squad_metrics.f1_v2 if version_2 else squad_metrics.f1_v1
    scores = []
    for example in examples:
        golds = tuple(squad_metrics.gold_answers_v2(example) if version_2 else example.answer_texts)
        predicted = answers.get(example.id)
        baseline = baseline_answers.get(example.id) if baseline_answers is not None else None

        def f1(answer: str | None, golds=golds) -> float:
            return 0.0 if answer is None else 100.0 * max(f1_metric(answer, gold) for gold in golds)

        exact = 0.0 if predicted is None else 100.0 * max(
            float(squad_metrics.exact_match(predicted, gold)) for gold in golds)
        scores.append(QuestionScore(
            id=example.id, title=example.title, question=example.question,
            context_words=len(example.context.split()), gold=golds, predicted=predicted or "",
            exact_match=exact, f1=f1(predicted), baseline_predicted=baseline,
            baseline_f1=f1(baseline) if baseline_answers is not None else None))
    return scores


def question_word(question: str) -> str:
    """The first of what/who/when/where/which/how/why in the question ("In which year ..." -> which)."""
    for word in _WORD.findall(question.lower()):
        if word in QUESTION_WORDS:
            return word
    return OTHER


def _bucket(value: int, edges: Sequence[int]) -> str:
    """'lo-hi' for edges [lo, next), the last as 'lo+'."""
    for low, high in zip(edges, edges[1:], strict=False):
        if low <= value < high:
            return str(low) if high - low == 1 else f"{low}-{high - 1}"
    return f"{edges[-1]}+"


ANSWER_LENGTH_EDGES = (1, 2, 3, 4, 6, 11)
CONTEXT_LENGTH_EDGES = (0, 100, 200, 300, 500)


def answer_length(score: QuestionScore) -> str:
    """Words in the shortest gold answer (what a perfect prediction needs to cover)."""
    lengths = [len(gold.split()) for gold in score.gold if gold]
    return _bucket(min(lengths), ANSWER_LENGTH_EDGES) if lengths else NO_ANSWER


def context_length(score: QuestionScore) -> str:
    return _bucket(score.context_words, CONTEXT_LENGTH_EDGES)


# Slice name -> (how a question is keyed, the display order of keys or None for by count).
SLICES: dict[str, tuple[Callable[[QuestionScore], str], Sequence[str] | None]] = {
    "question word": (lambda s: question_word(s.question), (*QUESTION_WORDS, OTHER)),
    "answer length (words)": (answer_length,
                              [_bucket(v, ANSWER_LENGTH_EDGES) for v in ANSWER_LENGTH_EDGES] + [NO_ANSWER]),
    "context length (words)": (context_length,
                               [_bucket(v, CONTEXT_LENGTH_EDGES) for v in CONTEXT_LENGTH_EDGES]),
    "article": (lambda s: s.title, None),
}


@dataclasses.dataclass(frozen=True)
class SliceRow:
    value: str
    count: int
    exact_match: float
    f1: float
    baseline_f1: float | None = None


def _row(value: str, scores: Sequence[QuestionScore]) -> SliceRow:
    n = len(scores)
    baseline = ([s.baseline_f1 for s in scores] if scores and scores[0].baseline_f1 is not None else None)
    return SliceRow(value, n, sum(s.exact_match for s in scores) / n, sum(s.f1 for s in scores) / n,
                    sum(baseline) / n if baseline is not None else None)


def overall(scores: Sequence[QuestionScore]) -> SliceRow:
    return _row("all", scores)


def slice_metrics(scores: Sequence[QuestionScore]) -> dict[str, list[SliceRow]]:
    """EM and F1 per slice value, each with its question count; empty values are left out."""
    result = {}
    for name, (key, order) in SLICES.items():
        groups: dict[str, list[QuestionScore]] = {}
        for score in scores:
            groups.setdefault(key(score), []).append(score)
        values = [v for v in order if v in groups] if order is not None else sorted(
            groups, key=lambda v: (-len(groups[v]), v))
        result[name] = [_row(value, groups[value]) for value in values]
    return result


def worst_and_best(scores: Sequence[QuestionScore], worst: int = 20, best: int = 5):
    """The `worst` lowest-F1 questions and `best` exactly-matched ones (stable by id for ties)."""
    ranked = sorted(scores, key=lambda s: (s.f1, s.id))
    correct = [s for s in sorted(scores, key=lambda s: s.id) if s.exact_match == 100.0]
    return ranked[:worst], correct[:best]


@dataclasses.dataclass(frozen=True)
class CurvePoint:
    step: int
    loss: float
    learning_rate: float
    windows_per_second: float


def read_training_curve(log_dir: str) -> list[CurvePoint]:
    """The Trainer's TensorBoard scalars (bertqa.model.training.TrainingMonitor), back as points by step.

    Read with TensorBoard's own EventAccumulator, the reader its dashboards use.
    """
    from tensorboard.backend.event_processing import event_accumulator

    from bertqa.model import training

    path = os.path.join(log_dir, training.TENSORBOARD_SUBDIR)
    if not os.path.isdir(path):
        return []
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    tags = set(accumulator.Tags().get("tensors", ()))
    if training.LOSS_TAG not in tags:
        return []

    def series(tag: str) -> dict[int, float]:
        if tag not in tags:
            return {}
        return {event.step: float(_tensor_value(event.tensor_proto)) for event in accumulator.Tensors(tag)}

    loss = series(training.LOSS_TAG)
    rate = series(training.LEARNING_RATE_TAG)
    speed = series(training.THROUGHPUT_TAG)
    return [CurvePoint(step, loss[step], rate.get(step, math.nan), speed.get(step, math.nan)) for step in sorted(loss)]


def _tensor_value(proto) -> float:
    import tensorflow as tf

    return float(tf.make_ndarray(proto))


# --- TFMA ----------------------------------------------------------------------------------------

TFMA_METRICS_FILE = "metrics-00000-of-00001.tfrecord"


def _tfma_column(slice_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", slice_name.lower()).strip("_")


def write_tfma_eval_result(slices: Mapping[str, Sequence[SliceRow]], whole: SliceRow, output_dir: str,
                           model_location: str = "", data_location: str = "") -> str:
    """The sliced metrics as a TFMA EvalResult (`tfma.load_eval_result(output_dir)` reads it).

    TFMA computes metrics from a model's per-example outputs; SQuAD's metrics need the answer
    text that postprocessing picks across a question's windows, which is not a per-example
    model output, so the metrics are computed here and only written in TFMA's format
    (MetricsForSlice records and an EvalRun config), as its writer lays them out.
    """
    import tensorflow as tf
    from tensorflow_model_analysis import version as tfma_version
    from tensorflow_model_analysis.proto import config_pb2, metrics_for_slice_pb2

    def record(slice_key: metrics_for_slice_pb2.SliceKey, row: SliceRow) -> bytes:
        proto = metrics_for_slice_pb2.MetricsForSlice(slice_key=slice_key)
        values = {"exact_match": row.exact_match, "f1": row.f1, "example_count": float(row.count)}
        if row.baseline_f1 is not None:
            values["baseline_f1"] = row.baseline_f1
        for name, value in values.items():
            entry = proto.metric_keys_and_values.add()
            entry.key.name = name
            entry.value.double_value.value = value
        return proto.SerializeToString()

    tf.io.gfile.makedirs(output_dir)
    columns = [_tfma_column(name) for name in slices]
    with tf.io.TFRecordWriter(os.path.join(output_dir, TFMA_METRICS_FILE)) as writer:
        writer.write(record(metrics_for_slice_pb2.SliceKey(), whole))
        for column, rows in zip(columns, slices.values(), strict=True):
            for row in rows:
                key = metrics_for_slice_pb2.SliceKey()
                key.single_slice_keys.add(column=column, bytes_value=row.value.encode("utf-8"))
                writer.write(record(key, row))
    eval_config = config_pb2.EvalConfig(
        slicing_specs=[config_pb2.SlicingSpec(), *[config_pb2.SlicingSpec(feature_keys=[c]) for c in columns]])
    run = config_pb2.EvalRun(version=tfma_version.VERSION, eval_config=eval_config, data_location=data_location,
                             file_format="tfrecord", model_locations={"": model_location})
    from google.protobuf import json_format

    with tf.io.gfile.GFile(os.path.join(output_dir, "eval_config.json"), "w") as f:
        f.write(json_format.MessageToJson(run))
    return output_dir
