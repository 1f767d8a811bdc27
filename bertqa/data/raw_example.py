"""The raw-example contract: one SQuAD question with its context and gold answers.

SquadExampleGen writes these as tf.Examples; BertQATransform, the evaluator and the
Model Maker-style API read them back. Keeping the codec here, beside the record,
is what stops the feature names from drifting between components.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question about one context.

    `answer_starts` are character offsets into `context` (Python str indices), one per
    entry of `answer_texts`. Unanswerable SQuAD 2.0 questions have `is_impossible`
    set and, for training, may carry their `plausible_answers` in `answer_texts`.
    """

    id: str
    title: str
    context: str
    question: str
    answer_texts: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    is_impossible: bool = False


_BYTES_FEATURES = ("id", "title", "context", "question")


def _bytes(values: Sequence[str]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def to_tf_example(example: SquadExample) -> tf.train.Example:
    features = {name: _bytes([getattr(example, name)]) for name in _BYTES_FEATURES}
    features["answer_texts"] = _bytes(example.answer_texts)
    features["answer_starts"] = _ints(example.answer_starts)
    features["is_impossible"] = _ints([int(example.is_impossible)])
    return tf.train.Example(features=tf.train.Features(feature=features))


def from_tf_example(proto: tf.train.Example | bytes) -> SquadExample:
    if isinstance(proto, bytes):
        proto = tf.train.Example.FromString(proto)
    feature = proto.features.feature

    def text(name: str) -> str:
        return feature[name].bytes_list.value[0].decode("utf-8")

    return SquadExample(
        id=text("id"),
        title=text("title"),
        context=text("context"),
        question=text("question"),
        answer_texts=tuple(v.decode("utf-8") for v in feature["answer_texts"].bytes_list.value),
        answer_starts=tuple(int(v) for v in feature["answer_starts"].int64_list.value),
        is_impossible=bool(feature["is_impossible"].int64_list.value[0]),
    )
