"""The pure core of BertQATransform: a Beam PTransform from raw-example records to window records.

Why not tf.Transform: one question becomes a variable number of windows (doc stride),
and tf.Transform's preprocessing_fn maps one row to one row; the tokenizer itself is
tensorflow_text's, the same one the serving graph runs (bertqa.data.tokenization).
"""

from __future__ import annotations

import collections
import re

import apache_beam as beam

from bertqa.data import windowing
from bertqa.data.raw_example import from_tf_example
from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer
from components.bert_qa_transform.tokenizer_artifact import TransformConfig

_BATCH = 256  # examples per tokenizer call: large enough to amortise TF op dispatch


# Split names come from the Examples artifact's properties and become path parts (TFX's
# Split-<name>, the report file): a name with "/" or ".." would write outside the artifact.
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def checked_split_names(names: list[str]) -> list[str]:
    """The names, if each is a plain word (letters, digits, '_' or '-'); ValueError otherwise."""
    bad = [name for name in names if not _SPLIT_NAME.match(name)]
    if bad:
        raise ValueError(f"split names {bad!r} are not plain words (letters, digits, '_', '-'): "
                         "they would become paths outside the artifact")
    return list(names)


class _WindowDoFn(beam.DoFn):
    """Tokenizes a batch of raw examples into windows; yields serialized windows and per-batch counts."""

    REPORT_TAG = "report"

    def __init__(self, config: TransformConfig, is_training: bool):
        self._config = config
        self._is_training = is_training
        self._tokenizer = None

    def setup(self):
        self._tokenizer = WordPieceTokenizer(TokenizerConfig(self._config.vocab_path, self._config.do_lower_case))

    def process(self, serialized_batch):
        examples = [from_tf_example(record) for record in serialized_batch]
        windows, report = windowing.make_windows(examples, self._tokenizer,
                                                 self._config.window_for(self._is_training), self._is_training)
        for window in windows:
            yield windowing.window_to_tf_example(window).SerializeToString()
        yield beam.pvalue.TaggedOutput(self.REPORT_TAG, {
            "questions": report.questions,
            "windows": report.windows,
            "windows_per_question": dict(report.windows_per_question),
            "answer_outside_all_windows": list(report.answer_outside_all_windows),
        })


def _merge_reports(reports) -> dict:
    """Merges per-batch reports; the result has the same shape, as Beam may merge merged reports again."""
    histogram = collections.Counter()
    outside: list[str] = []
    questions = windows = 0
    for report in reports:
        questions += report["questions"]
        windows += report["windows"]
        histogram.update({int(k): v for k, v in report["windows_per_question"].items()})
        outside.extend(report["answer_outside_all_windows"])
    return {"questions": questions, "windows": windows,
            "windows_per_question": {str(k): histogram[k] for k in sorted(histogram)},
            "answer_outside_all_windows": sorted(outside)}


@beam.ptransform_fn
def ExamplesToWindows(records: beam.PCollection, config: TransformConfig,  # noqa: N802 (Beam naming)
                      is_training: bool):
    """Serialized raw examples -> (serialized windows, a one-element PCollection with the merged report)."""
    outputs = (records
               | "Batch" >> beam.BatchElements(min_batch_size=_BATCH, max_batch_size=_BATCH)
               | "Window" >> beam.ParDo(_WindowDoFn(config, is_training)).with_outputs(
                   _WindowDoFn.REPORT_TAG, main="windows"))
    report = (outputs[_WindowDoFn.REPORT_TAG]
              | "MergeReports" >> beam.CombineGlobally(_merge_reports))
    return outputs["windows"], report
