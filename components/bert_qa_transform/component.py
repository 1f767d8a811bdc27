"""TFX glue for BertQATransform.

Artifacts in:
  examples: Examples from SquadExampleGen (one raw example per question; any splits).
Artifacts out:
  transformed_examples: Examples, the same splits, one tf.Example per doc-stride window
    (the window-feature contract of bertqa.data.windowing; the `train` split's windows at the
    spec's train_seq_len when it sets one); training labels on the `train` split only, and
    `window_report.json` (windows per question, questions whose answer no window contains).
  transform_graph: TransformGraph holding the tokenizer (vocab.txt and tokenizer.json:
    lower-casing, seq_len, query_len, doc_stride). It is not a tf.Transform output; it
    has that type because Trainer accepts a TransformGraph input, which is how the
    tokenizer reaches the serving graph.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, component_spec, standard_artifacts
from tfx.types.standard_component_specs import EXAMPLES_KEY

from bertqa.model import model_spec
from components.bert_qa_transform import core, tokenizer_artifact

TRANSFORMED_EXAMPLES_KEY = "transformed_examples"
TRANSFORM_GRAPH_KEY = "transform_graph"
WINDOW_REPORT_FILE = "window_report.json"
TRAIN_SPLIT = "train"


class BertQATransformSpec(component_spec.ComponentSpec):
    PARAMETERS = {"model_spec": component_spec.ExecutionParameter(type=str)}
    INPUTS = {EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        TRANSFORMED_EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(type=standard_artifacts.TransformGraph),
    }


def transform_config(spec: model_spec.BertQaSpec) -> tokenizer_artifact.TransformConfig:
    tokenizer = spec.tokenizer_config()
    return tokenizer_artifact.TransformConfig(vocab_path=tokenizer.vocab_path, do_lower_case=tokenizer.do_lower_case,
                                window=spec.window_config(), train_window=spec.train_window_config())


class BertQATransformExecutor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        config = transform_config(model_spec.from_json(exec_properties["model_spec"]))
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        transformed = artifact_utils.get_single_instance(output_dict[TRANSFORMED_EXAMPLES_KEY])
        split_names = core.checked_split_names(artifact_utils.decode_split_names(examples.split_names))
        transformed.split_names = artifact_utils.encode_split_names(split_names)

        report_dir = os.path.join(transformed.uri, "_reports")
        with self._make_beam_pipeline() as pipeline:
            for split in split_names:
                source = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
                windows, report = (
                    pipeline
                    | f"Read[{split}]" >> beam.io.ReadFromTFRecord(source, compression_type="gzip")
                    | f"Windows[{split}]" >> core.ExamplesToWindows(config, is_training=split == TRAIN_SPLIT))
                _ = windows | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                    os.path.join(artifact_utils.get_split_uri([transformed], split), "windows"),
                    file_name_suffix=".gz")
                _ = (report | f"ReportJson[{split}]" >> beam.Map(json.dumps)
                     | f"WriteReport[{split}]" >> beam.io.WriteToText(
                         os.path.join(report_dir, split), shard_name_template=""))

        reports = {}
        for split in split_names:
            with open(os.path.join(report_dir, split)) as f:
                reports[split] = json.loads(f.read())
            transformed.set_int_custom_property(f"{split}_windows", reports[split]["windows"])
            transformed.set_int_custom_property(f"{split}_questions", reports[split]["questions"])
        with open(os.path.join(transformed.uri, WINDOW_REPORT_FILE), "w") as f:
            json.dump(reports, f, indent=2)
        tokenizer_artifact.write_tokenizer_artifact(
            config, artifact_utils.get_single_uri(output_dict[TRANSFORM_GRAPH_KEY]))


class BertQATransform(base_beam_component.BaseBeamComponent):
    """Raw examples -> windows + tokenizer (see the module docstring for artifacts)."""

    SPEC_CLASS = BertQATransformSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(BertQATransformExecutor)

    def __init__(self, examples: types.BaseChannel, spec: model_spec.BertQaSpec):
        super().__init__(spec=BertQATransformSpec(
            examples=examples,
            model_spec=model_spec.to_json(spec),
            transformed_examples=types.Channel(type=standard_artifacts.Examples),
            transform_graph=types.Channel(type=standard_artifacts.TransformGraph)))
