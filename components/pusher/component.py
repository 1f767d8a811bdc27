"""Pusher: TFX's own Pusher component, whose executor pushes a version whole or not at all.

Artifacts in: model (TFLiteExporter's exported_model: model.tflite, vocab.txt, variants.json,
model_record.json and any other blessed variant in Format-Serving) and model_blessing
(TFLiteExporter's blessing). Artifacts out: pushed_model (PushedModel with TFX's custom
properties `pushed`, `pushed_destination`, `pushed_version`, and a copy of what was pushed).

The one change from TFX's executor is how the files reach the push destination: through
bertqa.operations.atomic_push (staging directory, sync, one rename) instead of a file-by-file copy
into the version directory, so a kill or a full disk mid-push never leaves a half-written
version where phones and the next run's baseline look. Blessing checks, versioning by Unix
time, "already there: skip" and the properties are TFX's.
"""

from __future__ import annotations

import time

from absl import logging
from tfx import v1 as tfx
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from bertqa.operations import atomic_push


class AtomicPusherExecutor(tfx_pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(f"push destination {destination.WhichOneof('destination')!r}: only a "
                                      "filesystem destination is supported")
        versioning = destination.filesystem.versioning
        if versioning not in (pusher_pb2.Versioning.AUTO, pusher_pb2.Versioning.UNIX_TIMESTAMP):
            raise NotImplementedError(f"versioning {versioning}: only Unix-time versions are supported")
        version = str(int(time.time()))
        try:
            serving_path = atomic_push.push_version(model_path, destination.filesystem.base_directory, version,
                                                    on_step=lambda step: logging.info("push %s: %s", version, step))
            logging.info("Model written to serving path %s.", serving_path)
        except atomic_push.VersionExists as exists:
            serving_path = str(exists)
            logging.info("Destination directory %s already exists, skipping current push.", serving_path)
        # As TFX's Pusher: a copy of what was pushed in the PushedModel artifact, for archiving.
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
        logging.info("Model pushed to %s.", model_push.uri)


def Pusher(**kwargs) -> tfx.components.Pusher:  # noqa: N802 (a component factory reads as a class)
    """TFX's Pusher (same inputs, outputs and parameters) with AtomicPusherExecutor."""
    return tfx.components.Pusher(custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPusherExecutor),
                                 **kwargs)


__all__ = ["AtomicPusherExecutor", "Pusher"]
