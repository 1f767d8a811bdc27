"""The pure core of SquadExampleGen: SQuAD files -> serialized raw-example tf.Examples, with a report.

No TFX here: `validate_files` and the `SquadFilesToExamples` Beam PTransform are what the
component's executor calls, and what the tests exercise directly.
"""

from __future__ import annotations

import apache_beam as beam
import tensorflow as tf

from bertqa.data import squad_io
from bertqa.data.raw_example import to_tf_example


def list_input_files(pattern: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise squad_io.SquadDataError(f"{pattern}: no SQuAD file matches this pattern. "
                                      "Check the input directory and the split patterns.")
    return files


def validate_files(files: list[str], config: squad_io.SquadReadConfig) -> squad_io.DataReport:
    """Reads every file once before Beam starts.

    A malformed file then stops the run with one SquadDataError naming the file and
    the problem, instead of an exception buried in a Beam worker traceback; the same
    pass gives the data report. Reading a 30 MB SQuAD file takes about a second, so
    reading again inside Beam costs little and keeps Beam's reads distributed.
    """
    reports = [squad_io.read_squad_file(path, config)[1] for path in files]
    return squad_io.merge_reports(reports)


def _file_to_examples(path: str, config: squad_io.SquadReadConfig):
    examples, _ = squad_io.read_squad_file(path, config)
    for example in examples:
        yield to_tf_example(example)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def SquadFilesToExamples(pipeline: beam.Pipeline, files: list[str],  # noqa: N802 (Beam PTransform naming)
                         config: squad_io.SquadReadConfig) -> beam.PCollection:
    return (pipeline
            | "ListFiles" >> beam.Create(files)
            | "ParseSquad" >> beam.FlatMap(_file_to_examples, config))
