"""TFX glue for TFLiteExporter.

Artifacts in:
  model: Model from Trainer (SavedModel with the `logits` signature).
  model_blessing: ModelBlessing from SquadEvaluator; nothing is exported unless blessed.
  transform_graph: the tokenizer artifact from BertQATransform (vocab.txt, settings).
Artifacts out:
  model: Model whose Format-Serving directory holds model.tflite (inputs [1, seq_len]
    int32 named ids/mask/segment_ids in the metadata, outputs start_logits/end_logits,
    the vocab packed inside) and vocab.txt: what Pusher copies to the serving directory.
    Custom properties: exported (1/0), quantization, size_bytes.
"""

from __future__ import annotations

import logging

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, component_spec, standard_artifacts
from tfx.utils import path_utils

from components.bert_qa_transform.core import read_tokenizer_artifact
from components.tflite_exporter import core


class TFLiteExporterSpec(component_spec.ComponentSpec):
    PARAMETERS = {"quantization": component_spec.ExecutionParameter(type=str)}
    INPUTS = {
        "model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        "transform_graph": component_spec.ChannelParameter(type=standard_artifacts.TransformGraph),
    }
    OUTPUTS = {"exported_model": component_spec.ChannelParameter(type=standard_artifacts.Model)}


class TFLiteExporterExecutor(base_executor.BaseExecutor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 (TFX API name)
        exported = artifact_utils.get_single_instance(output_dict["exported_model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        exported.set_string_custom_property("quantization", exec_properties["quantization"])
        if not model_utils.is_model_blessed(blessing):
            logging.info("Model not blessed; no TFLite export.")
            exported.set_int_custom_property("exported", 0)
            return
        tokenizer = read_tokenizer_artifact(artifact_utils.get_single_uri(input_dict["transform_graph"]))
        model = artifact_utils.get_single_instance(input_dict["model"])
        plan = core.ExportPlan(quantization=exec_properties["quantization"], seq_len=tokenizer.window.seq_len,
                               query_len=tokenizer.window.query_len, do_lower_case=tokenizer.do_lower_case)
        result = core.export(path_utils.serving_model_path(model.uri), tokenizer.vocab_path,
                             path_utils.serving_model_dir(exported.uri), plan)
        exported.set_int_custom_property("exported", 1)
        exported.set_int_custom_property("size_bytes", result.size_bytes)
        for warning in result.warnings:
            logging.warning("TFLite export: %s", warning)


class TFLiteExporter(base_component.BaseComponent):
    """Blessed SavedModel -> quantized model.tflite with metadata (see the module docstring)."""

    SPEC_CLASS = TFLiteExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(TFLiteExporterExecutor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 transform_graph: types.BaseChannel, quantization: str = "dynamic"):
        super().__init__(spec=TFLiteExporterSpec(
            model=model, model_blessing=model_blessing, transform_graph=transform_graph,
            quantization=quantization, exported_model=types.Channel(type=standard_artifacts.Model)))
