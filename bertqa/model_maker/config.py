"""Model Maker's export formats and post-training quantization configs, mapped onto bertqa.on_device.tflite_export.

The TFLite file must stay runnable by the TFLite Task Library's BertQuestionAnswerer,
which fixes more of the conversion than Model Maker's QuantizationConfig exposes; what
cannot take effect is said where it is accepted (see `QuantizationConfig.for_int8`).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from bertqa.model.modeling import INPUT_NAMES
from bertqa.on_device import conversion

_log = logging.getLogger(__name__)

# Model Maker's default number of int8 calibration steps.
DEFAULT_QUANTIZATION_STEPS = 2000


@enum.unique
class ExportFormat(enum.Enum):
    """Model Maker's export formats; question answering exports TFLITE, VOCAB and SAVED_MODEL."""

    TFLITE = "TFLITE"
    SAVED_MODEL = "SAVED_MODEL"
    LABEL = "LABEL"
    VOCAB = "VOCAB"
    TFJS = "TFJS"


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizationConfig:
    """One of Model Maker's quantization recipes; build it with the for_* factories.

    scheme: "dynamic", "float16" or "int8" (bertqa.on_device.tflite_export's names).
    representative_data: for int8, a DataLoader whose windows calibrate activation ranges.
    quantization_steps: how many of those windows calibration reads.
    """

    scheme: str
    representative_data: Any = None
    quantization_steps: int = DEFAULT_QUANTIZATION_STEPS

    def __post_init__(self) -> None:
        self.to_core()  # validates scheme and steps with the core's own rules
        if self.scheme == "int8" and self.representative_data is None:
            raise ValueError("int8 quantization needs representative_data (a DataLoader) to calibrate with.")

    @classmethod
    def for_dynamic(cls) -> QuantizationConfig:
        """int8 weights, float activations (Model Maker's default for BERT question answering)."""
        return cls("dynamic")

    @classmethod
    def for_float16(cls) -> QuantizationConfig:
        """float16 weights: half the size of the float model, float32 arithmetic on CPU."""
        return cls("float16")

    @classmethod
    def for_int8(
        cls,
        representative_data,
        quantization_steps: int = DEFAULT_QUANTIZATION_STEPS,
        inference_input_type: tf.dtypes.DType = tf.uint8,
        inference_output_type: tf.dtypes.DType = tf.uint8,
        supported_ops: tf.lite.OpsSet = tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
    ) -> QuantizationConfig:
        """int8 weights and activations, calibrated on `quantization_steps` windows of `representative_data`.

        Model Maker's signature, but three arguments cannot take effect, because the Task
        Library's BertQuestionAnswerer must still run the file:
        * inference_input_type: the inputs are token ids, mask and segment ids, which the
          Task Library writes as int32; they are integers already and are never quantized.
        * inference_output_type: the Task Library reads the logits as float32, so they stay
          float32 (an int8/uint8 output would be read as garbage).
        * supported_ops: TFLITE_BUILTINS_INT8 means integer-only, which float32 logits rule
          out, and Flex (select TF) ops are absent from the Task Library; the export uses
          TFLITE_BUILTINS: int8 kernels wherever they exist, float kernels elsewhere
          (bertqa.on_device.tflite_export's choice, made for the same reason).
        """
        defaults = (tf.uint8, tf.uint8, tf.lite.OpsSet.TFLITE_BUILTINS_INT8)
        given = (inference_input_type, inference_output_type, supported_ops)
        if given != defaults:
            _log.warning("for_int8: inference_input_type, inference_output_type and supported_ops have no effect; "
                         "the model keeps int32 inputs, float32 logits and builtin ops for the Task Library.")
        return cls("int8", representative_data, quantization_steps)

    def to_core(self) -> conversion.QuantizationConfig:
        return conversion.QuantizationConfig(self.scheme, self.quantization_steps)

    def representative_windows(self) -> Iterator[dict[str, np.ndarray]] | None:
        """The calibration windows (the three id arrays of each), or None for schemes without calibration."""
        if self.scheme != "int8":
            return None
        return ({name: np.asarray(getattr(window, name), np.int32) for name in INPUT_NAMES}
                for window in self.representative_data.windows)


def resolve_quantization(quantization_config) -> QuantizationConfig | None:
    """Model Maker's convention: 'default' is the spec's default (dynamic range), None is the float model."""
    if isinstance(quantization_config, str) and quantization_config == "default":
        return QuantizationConfig.for_dynamic()
    if quantization_config is None or isinstance(quantization_config, QuantizationConfig):
        return quantization_config
    raise TypeError(f"quantization_config must be a QuantizationConfig, 'default' or None, "
                    f"got {quantization_config!r}")
