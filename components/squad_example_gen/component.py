"""TFX glue for SquadExampleGen.

Artifacts in: none (reads SQuAD JSON files under `input_base`, matched by the input
config's split patterns, which may carry {SPAN}/{VERSION} for rolling retraining; the
latest span, or the one a static range config names).
Artifacts out:
  examples: Examples, splits `train`/`eval` (from separate files, or a hash split on
    the article `title`, so paragraphs never leak across splits), one tf.Example per
    question with the raw-example fields of bertqa.data.raw_example.
  Data counts (questions in, kept, repaired, dropped by reason) are written to
  `data_report.json` in the examples artifact and as its custom properties; `span`,
  `version` and `input_fingerprint` are custom properties too.

Spans are resolved by TFX's file driver where the orchestrator runs it (LocalDagRunner,
Vertex AI's preCacheCheck). Open-source Kubeflow Pipelines runs no driver, so the executor
resolves them itself, with the same TFX function, when the driver has not.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import apache_beam as beam
from tfx import types
from tfx.components.example_gen import component as example_gen_component
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, component_spec, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from bertqa.data import squad_io
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


def _spans_present(input_base: str, pattern: str) -> list[int]:
    """The span numbers that files matching a {SPAN} pattern carry, for messages."""
    glob = pattern.replace("{SPAN}", "*").replace("{VERSION}", "*")
    regex = re.escape(os.path.join(input_base, pattern)).replace(r"\{SPAN\}", r"(\d+)").replace(
        r"\{VERSION\}", r"\d+")
    spans = set()
    for path in fileio.glob(os.path.join(input_base, glob)):
        match = re.fullmatch(regex, path)
        if match:
            spans.add(int(match.group(1)))
    return sorted(spans)


def resolve_spans(input_base: str, input_config: example_gen_pb2.Input,
                  range_config: range_config_pb2.RangeConfig | None = None):
    """(input config with the span filled in, span, version, input fingerprint), as TFX's driver resolves them.

    Uses TFX's own resolution, so a pipeline reads the same span whichever orchestrator
    runs it; a span that no file has, or splits whose latest spans differ, stop the run
    with one SquadDataError that says what is there, never a silent run on an older span.
    """
    resolved = copy.deepcopy(input_config)
    try:
        fingerprint, span, version = example_gen_utils.calculate_splits_fingerprint_span_and_version(
            input_base, resolved.splits, range_config)
    except ValueError as error:
        wanted = ""
        if range_config is not None and range_config.HasField("static_range"):
            wanted = f"span {range_config.static_range.start_span_number} "
        present = {split.name: _spans_present(input_base, split.pattern) for split in input_config.splits
                   if "{SPAN}" in split.pattern}
        listing = "; ".join(f"{name}: {', '.join(map(str, spans)) or 'none'}" for name, spans in present.items())
        patterns = ", ".join(os.path.join(input_base, split.pattern) for split in input_config.splits)
        raise squad_io.SquadDataError(
            f"{patterns}: no {wanted}data for every split ({error}). Spans present: {listing or 'none'}. "
            "Put each split's file of the new span in place (e.g. span-N/train.json and span-N/eval.json), "
            "or name a span that exists with --span.") from error
    return resolved, span, version, fingerprint


def _resolve_spans_without_driver(exec_properties: dict[str, Any]) -> None:
    """What TFX's file driver puts in exec_properties, for orchestrators that run no driver (open-source KFP)."""
    if exec_properties.get(example_gen_utils.SPAN_PROPERTY_NAME) is not None:
        return
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    range_config = None
    if exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY):
        range_config = range_config_pb2.RangeConfig()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.RANGE_CONFIG_KEY], range_config)
    resolved, span, version, fingerprint = resolve_spans(
        exec_properties[standard_component_specs.INPUT_BASE_KEY], input_config, range_config)
    exec_properties[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(resolved)
    exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = span
    exec_properties[example_gen_utils.VERSION_PROPERTY_NAME] = version
    exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = fingerprint


@beam.ptransform_fn
def _SquadToExamples(pipeline, exec_properties: dict[str, Any], split_pattern: str):  # noqa: N802 (Beam naming)
    files = core.list_input_files(os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern))
    return pipeline | core.SquadFilesToExamples(files, _read_config(exec_properties))


class SquadExampleGenExecutor(BaseExampleGenExecutor):
    def GetInputSourceToExamplePTransform(self):  # noqa: N802 (TFX API name)
        return _SquadToExamples

    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        _resolve_spans_without_driver(exec_properties)
        config = _read_config(exec_properties)
        reports = {name: core.validate_files(files, config) for name, files in _split_files(exec_properties).items()}
        super().Do(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        # TFX's driver leaves `version` out when the patterns have no {VERSION}; its own helper reads it.
        exec_properties.setdefault(example_gen_utils.VERSION_PROPERTY_NAME, None)
        example_gen_driver.update_output_artifact(exec_properties, examples.mlmd_artifact)
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


def single_span(span: int) -> range_config_pb2.RangeConfig:
    """A range config that reads exactly span `span` (TFX's ExampleGen reads one span at a time)."""
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=span, end_span_number=span))


def separate_files(train_pattern: str, eval_pattern: str) -> example_gen_pb2.Input:
    """An input config with train and eval from separate files."""
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="train", pattern=train_pattern),
        example_gen_pb2.Input.Split(name="eval", pattern=eval_pattern)])
