"""TFX glue for SquadExampleGen.

Artifacts in: none (reads SQuAD JSON files under `input_base`, matched by the input
config's split patterns, which may carry {SPAN}/{VERSION} for rolling retraining).
Artifacts out:
  examples: Examples, splits `train`/`eval` (from separate files, or a hash split on
    the article `title`, so paragraphs never leak across splits), one tf.Example per
    question with the raw-example fields of bertqa.raw_example.
  Data counts (questions in, kept, repaired, dropped by reason) are written to
  `data_report.json` in the examples artifact and as its custom properties.
"""

from __future__ import annotations

import json
import os
from typing import Any

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import component as example_gen_component
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, component_spec, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from bertqa import squad_io
from components.squad_example_gen import core

DATA_REPORT_FILE = "data_report.json"


def _read_config(exec_properties: dict[str, Any]) -> squad_io.SquadReadConfig:
    return squad_io.SquadReadConfig(
        version_2_with_negative=bool(exec_properties.get("version_2_with_negative", 0)),
        strict=bool(exec_properties.get("strict", 0)))


def _split_files(exec_properties: dict[str, Any]) -> dict[str, list[str]]:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    return {split.name: core.list_input_files(os.path.join(base, split.pattern)) for split in input_config.splits}


@beam.ptransform_fn
def _SquadToExamples(pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802 (Beam naming)
    files = core.list_input_files(os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern))
    return pipeline | core.SquadFilesToExamples(files, _read_config(exec_properties))


class SquadExampleGenExecutor(BaseExampleGenExecutor):
    def GetInputSourceToExamplePTransform(self):  # noqa: N802 (TFX API name)
        return _SquadToExamples

    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        config = _read_config(exec_properties)
        reports = {name: core.validate_files(files, config) for name, files in _split_files(exec_properties).items()}
        super().Do(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        total = squad_io.merge_reports(list(reports.values()))
        with open(os.path.join(examples.uri, DATA_REPORT_FILE), "w") as f:
            json.dump({"total": total.to_dict(), "by_input_split": {k: v.to_dict() for k, v in reports.items()}},
                      f, indent=2)
        examples.set_int_custom_property("questions_in", total.questions_in)
        examples.set_int_custom_property("questions_kept", total.kept)
        examples.set_int_custom_property("questions_repaired", sum(total.repaired.values()))
        examples.set_int_custom_property("questions_dropped", sum(total.dropped.values()))


class SquadExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        "version_2_with_negative": component_spec.ExecutionParameter(type=int, optional=True),
        "strict": component_spec.ExecutionParameter(type=int, optional=True),
    }


class SquadExampleGen(example_gen_component.FileBasedExampleGen):
    """Reads SQuAD v1.1/v2.0 JSON into one tf.Example per question (see the module docstring).

    A FileBasedExampleGen, so TFX's file driver resolves spans/versions and fingerprints
    the input files (caching), and the Kubeflow V2 runner treats it as a file-based ExampleGen.
    """

    SPEC_CLASS = SquadExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(SquadExampleGenExecutor)

    def __init__(self, input_base: str, input_config: example_gen_pb2.Input | None = None,
                 output_config: example_gen_pb2.Output | None = None,
                 range_config=None, version_2_with_negative: bool = False, strict: bool = False):
        input_config = input_config or example_gen_utils.make_default_input_config("*.json")
        output_config = output_config or example_gen_utils.make_default_output_config(input_config)
        spec = SquadExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            range_config=range_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            version_2_with_negative=int(version_2_with_negative),
            strict=int(strict),
            examples=types.Channel(type=standard_artifacts.Examples))
        # Skip FileBasedExampleGen.__init__, which builds the base spec without our parameters.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)


def split_by_title(train_buckets: int = 9, eval_buckets: int = 1) -> example_gen_pb2.Output:
    """An output config that hash-splits one input by article title (never by question)."""
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=train_buckets),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=eval_buckets)],
        partition_feature_name="title"))


def separate_files(train_pattern: str, eval_pattern: str) -> example_gen_pb2.Input:
    """An input config with train and eval from separate files."""
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="train", pattern=train_pattern),
        example_gen_pb2.Input.Split(name="eval", pattern=eval_pattern)])
