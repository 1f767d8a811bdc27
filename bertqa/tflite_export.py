"""Turns the trainer's SavedModel into a (quantized) TFLite model the Task Library can run.

The trainer exports a SavedModel whose `logits` signature maps int32
`input_word_ids` / `input_mask` / `input_type_ids` of shape [batch, seq] to float32
`start_logits` / `end_logits`. This module

1. takes the SavedModel's `tflite_logits` signature (the same weights traced at exactly
   [1, seq_len] with LayerNorm and GELU in ops XNNPACK runs, see
   bertqa.modeling.on_device_ops), or, for SavedModels without one (TF Hub encoders),
   re-traces `logits` at [1, seq_len]. The sequence length is fixed because the TFLite
   Task Library's BertQuestionAnswerer fills exactly one window of 384 tokens and would
   see a [1, 1] tensor if the model kept a dynamic length; the batch is fixed at 1
   because a single dynamic-sized tensor turns XNNPACK, the CPU delegate phones use,
   off for the whole model ("Attempting to use a delegate that only supports
   static-sized tensors"). `resizable_batch=True` (tests, batched-evaluation trials)
   keeps a [-1, seq_len] batch instead, at the cost of XNNPACK;
2. converts it with one of four quantization schemes (none, dynamic range, float16,
   int8 with a representative dataset), keeping int32 id inputs and float32 logit
   outputs because those are the only types the Task Library reads and writes;
   dynamic range gets per-channel weight scales (`per_channel_dense_weights`);
3. writes the metadata the Task Library looks for: input tensors named `ids`, `mask`
   and `segment_ids`, outputs named `start_logits` and `end_logits`, and a
   BertTokenizer input process unit with vocab.txt packed into the file.

`TfliteQaRunner` runs the exported file on already-tokenized windows so the
evaluator can score exactly the artifact that ships, and `median_latency_seconds`
times it the way the Task Library runs it: one window per question.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import tensorflow as tf

LOGITS_SIGNATURE = "logits"
TFLITE_LOGITS_SIGNATURE = "tflite_logits"
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")

# Hard-coded in tflite-support's bert_question_answerer.{h,cc}: kMaxSeqLen, kMaxQueryLen
# and kUseLowerCase. The Task Library cannot be told otherwise through metadata.
TASK_LIBRARY_SEQ_LEN = 384
TASK_LIBRARY_QUERY_LEN = 64
TASK_LIBRARY_LOWER_CASE = True

# The metadata tensor names BertQuestionAnswerer finds its tensors by
# (kIdsTensorName, kMaskTensorName, kSegmentIdsTensorName, k{Start,End}LogitsTensorName).
# BertInputTensorsMd writes exactly these input names.
TASK_LIBRARY_INPUT_NAMES = {"input_word_ids": "ids", "input_mask": "mask", "input_type_ids": "segment_ids"}
TASK_LIBRARY_OUTPUT_NAMES = {"start_logits": "start_logits", "end_logits": "end_logits"}

_QUANTIZATION_NAMES = ("none", "dynamic", "float16", "int8")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizationConfig:
    """How to quantize the TFLite model; the factories mirror Model Maker's names.

    `representative_steps` is how many windows int8 calibration reads; it is
    ignored by the other schemes. `per_channel_dense` (dynamic only) gives each
    fully-connected layer's int8 weights one scale per output channel instead of the
    converter's one per tensor (see `per_channel_dense_weights`).
    """

    name: str
    representative_steps: int = 100
    per_channel_dense: bool = True

    def __post_init__(self) -> None:
        if self.name not in _QUANTIZATION_NAMES:
            raise ValueError(f"Unknown quantization {self.name!r}; expected one of {_QUANTIZATION_NAMES}.")
        if self.representative_steps < 1:
            raise ValueError(f"representative_steps must be at least 1, got {self.representative_steps}.")

    @classmethod
    def none(cls) -> QuantizationConfig:
        """Plain float32 model."""
        return cls("none")

    @classmethod
    def for_dynamic(cls) -> QuantizationConfig:
        """int8 weights, float activations computed with int8 kernels at run time."""
        return cls("dynamic")

    @classmethod
    def for_float16(cls) -> QuantizationConfig:
        """float16 weights, dequantized to float32 at load time on CPU."""
        return cls("float16")

    @classmethod
    def for_int8(cls, representative_steps: int = 100) -> QuantizationConfig:
        """int8 weights and activations, calibrated on `representative_steps` windows."""
        return cls("int8", representative_steps)

    @classmethod
    def from_name(cls, name: str, representative_steps: int = 100) -> QuantizationConfig:
        """For pipeline parameters that arrive as strings."""
        return cls(name, representative_steps)


@dataclasses.dataclass(frozen=True)
class TfliteExportConfig:
    """The window shape the model is exported for and how the trainer tokenized text.

    `resizable_batch` keeps the batch dimension dynamic, which turns XNNPACK off (see the
    module docstring); the default freezes it at 1, as the Task Library runs it.
    """

    seq_len: int = TASK_LIBRARY_SEQ_LEN
    query_len: int = TASK_LIBRARY_QUERY_LEN
    do_lower_case: bool = True
    resizable_batch: bool = False

    def __post_init__(self) -> None:
        if self.seq_len < 4:
            raise ValueError(f"seq_len must be at least 4 ([CLS] q [SEP] c), got {self.seq_len}.")
        if not 0 < self.query_len < self.seq_len - 2:
            raise ValueError(f"query_len must be in [1, seq_len - 3], got {self.query_len}.")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Where the model went, how big it is, and why the Task Library might not run it as trained."""

    path: str
    size_bytes: int
    warnings: tuple[str, ...] = ()
    # The warnings that say the Task Library cannot run the file, or runs it otherwise than the
    # interpreter that measured it; the rest say the spec differs from the Task Library's limits.
    task_library_failures: tuple[str, ...] = ()


def task_library_incompatibilities(config: TfliteExportConfig) -> list[str]:
    """Why the Task Library would feed this model differently from training; empty if it would not."""
    problems = []
    if config.seq_len != TASK_LIBRARY_SEQ_LEN:
        problems.append(
            f"The model takes windows of seq_len={config.seq_len} tokens, but the Task Library's "
            f"BertQuestionAnswerer always fills {TASK_LIBRARY_SEQ_LEN}; it cannot run this model."
        )
    if config.query_len != TASK_LIBRARY_QUERY_LEN:
        problems.append(
            f"The model was trained with questions cut to query_len={config.query_len} tokens, but the "
            f"Task Library cuts them to {TASK_LIBRARY_QUERY_LEN}; its windows differ from training."
        )
    if config.do_lower_case != TASK_LIBRARY_LOWER_CASE:
        problems.append(
            "The model was trained on cased text (do_lower_case=False), but the Task Library always "
            "lower-cases the question and context; its answers would be degraded."
        )
    return problems


# --- Conversion ------------------------------------------------------------------------------


def _load_saved_model(saved_model_dir: str):
    # The trainer's SavedModel also carries a raw-text `serving_default` signature whose
    # graph uses tensorflow_text ops; loading any part of the SavedModel needs those ops
    # registered, even though we only ever call the `logits` signature.
    try:
        import tensorflow_text  # noqa: F401
    except ImportError:
        _log.info("tensorflow_text is not installed; loading %s without its ops", saved_model_dir)
    return tf.saved_model.load(saved_model_dir)


def _fixed_shape_function(logits_fn, seq_len: int, resizable_batch: bool = False):
    """The `logits` signature re-traced for windows of exactly `seq_len` tokens, in batches or one at a time."""
    batch = None if resizable_batch else 1
    specs = [tf.TensorSpec([batch, seq_len], tf.int32, name=name) for name in INPUT_NAMES]

    @tf.function(input_signature=specs)
    def fixed(input_word_ids, input_mask, input_type_ids):
        outputs = logits_fn(
            input_word_ids=input_word_ids, input_mask=input_mask, input_type_ids=input_type_ids
        )
        return {name: outputs[name] for name in OUTPUT_NAMES}

    return fixed.get_concrete_function()


def _check_logits_signature(loaded, saved_model_dir: str):
    signatures = getattr(loaded, "signatures", {})
    if LOGITS_SIGNATURE not in signatures:
        raise ValueError(
            f"{saved_model_dir} has no {LOGITS_SIGNATURE!r} signature (found {sorted(signatures)}); "
            "the trainer must export one taking input_word_ids/input_mask/input_type_ids."
        )
    logits_fn = signatures[LOGITS_SIGNATURE]
    missing_inputs = set(INPUT_NAMES) - set(logits_fn.structured_input_signature[1])
    missing_outputs = set(OUTPUT_NAMES) - set(logits_fn.structured_outputs)
    if missing_inputs or missing_outputs:
        raise ValueError(
            f"The {LOGITS_SIGNATURE!r} signature lacks inputs {sorted(missing_inputs)} "
            f"or outputs {sorted(missing_outputs)}."
        )
    return logits_fn


def pad_window(window: Mapping[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    """One window as the exported model takes it: the three inputs as int32 [1, seq_len], zero-padded."""
    padded = {}
    for name in INPUT_NAMES:
        if name not in window:
            raise ValueError(f"A representative window lacks {name!r} (has {sorted(window)}).")
        values = np.asarray(window[name]).reshape(-1)
        if values.size > seq_len:
            raise ValueError(f"A window has {values.size} tokens, more than seq_len={seq_len}.")
        row = np.zeros((1, seq_len), np.int32)
        row[0, : values.size] = values
        padded[name] = row
    return padded


def _representative_windows(
    windows: Iterable[Mapping[str, np.ndarray]] | None, seq_len: int, steps: int
) -> list[dict[str, np.ndarray]]:
    if windows is None:
        raise ValueError(
            "int8 quantization needs representative_windows (tokenized training windows) to calibrate "
            "activation ranges."
        )
    padded = []
    for window in windows:
        if len(padded) >= steps:
            break
        padded.append(pad_window(window, seq_len))
    if not padded:
        raise ValueError("representative_windows yielded no windows; int8 calibration needs at least one.")
    return padded


def _configure_quantization(
    converter: tf.lite.TFLiteConverter,
    quantization: QuantizationConfig,
    calibration: list[dict[str, np.ndarray]] | None,
) -> None:
    # Only builtin ops: the Task Library's BertQuestionAnswerer resolves ops with the
    # builtin resolver and has no Flex (select TF ops) delegate, so a model needing
    # Flex ops must fail here rather than on the device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization.name == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization.name == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization.name == "int8":

        def representative_dataset() -> Iterator[dict[str, np.ndarray]]:
            # Calibration runs the float model once per window: tens of seconds for a real BERT.
            yield from _progress(calibration, "int8 calibration", unit="window")

        converter.representative_dataset = representative_dataset
        # Integer quantization of weights and activations where int8 kernels exist, float
        # kernels elsewhere (TFLITE_BUILTINS, not TFLITE_BUILTINS_INT8). The interface
        # stays as the Task Library needs it: the int32 id/mask/segment inputs are never
        # quantized, and it reads the logits with PopulateVector<float>, so they must
        # stay float32 rather than int8.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32


def convert_saved_model(
    saved_model_dir: str,
    config: TfliteExportConfig,
    quantization: QuantizationConfig,
    representative_windows: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> bytes:
    """The model as a TFLite flatbuffer with [1, seq_len] int32 inputs, without metadata.

    Converts the `tflite_logits` signature when the SavedModel has one for this seq_len, else
    `logits`; with `config.resizable_batch` always `logits`, with a [-1, seq_len] batch.

    `representative_windows` (int8 only) are tokenized windows, dicts of the three
    inputs, each at most seq_len long; they are zero-padded to seq_len.
    """
    calibration = None
    if quantization.name == "int8":
        calibration = _representative_windows(
            representative_windows, config.seq_len, quantization.representative_steps
        )
    loaded = _load_saved_model(saved_model_dir)
    logits_fn = _check_logits_signature(loaded, saved_model_dir)
    on_device = loaded.signatures.get(TFLITE_LOGITS_SIGNATURE)
    if on_device is not None and not config.resizable_batch and all(
            spec.shape.as_list() == [1, config.seq_len]
            for spec in on_device.structured_input_signature[1].values()):
        logits_fn = on_device
    concrete = _fixed_shape_function(logits_fn, config.seq_len, config.resizable_batch)
    started = time.monotonic()
    model = _convert(concrete, loaded, quantization, calibration)
    if quantization.name == "dynamic" and quantization.per_channel_dense:
        model = per_channel_dense_weights(model, _convert(concrete, loaded, QuantizationConfig.none(), None))
    _log.info(
        "Converted %s (%s) to %d bytes in %.1fs",
        saved_model_dir,
        quantization.name,
        len(model),
        time.monotonic() - started,
    )
    return model


def _convert(concrete, loaded, quantization: QuantizationConfig, calibration) -> bytes:
    # `loaded` owns the variables the concrete function captures; the converter must
    # be able to reach them to freeze them into constants.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)
    _configure_quantization(converter, quantization, calibration)
    return bytes(converter.convert())


def _builtin_code(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _fully_connected_ops(model) -> list:
    """Every FULLY_CONNECTED op of the main subgraph, in op order."""
    from tensorflow.lite.python import schema_py_generated as schema

    return [op for op in model.subgraphs[0].operators
            if _builtin_code(model, op) == schema.BuiltinOperator.FULLY_CONNECTED]


def _fully_connected_weights(model) -> list:
    """The weight tensor (input 1) of every FULLY_CONNECTED op of the main subgraph, in op order."""
    graph = model.subgraphs[0]
    return [graph.tensors[op.inputs[1]] for op in _fully_connected_ops(model)]


def _opcode_index(model, builtin: int) -> int:
    """The index of `builtin` in the model's operator codes, added when the model has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _constant(model, values: np.ndarray, name: str) -> int:
    """A new float32 constant tensor in the main subgraph (with its own buffer); returns its index."""
    from tensorflow.lite.python import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(values, np.float32).tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = name.encode(), schema.TensorType.FLOAT32, len(model.buffers) - 1
    tensor.shape = np.asarray(values.shape, np.int32)
    graph = model.subgraphs[0]
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def per_channel_dense_weights(dynamic_model: bytes, float_model: bytes) -> bytes:
    """The dynamic-range model with the precision of one int8 scale per output channel in every dense layer.

    TensorFlow 2.16's dynamic-range quantizer gives fully-connected weights a single
    scale per tensor, so each layer's largest weight sets the step for all of its
    rows. On the bundled sample's MiniLM that cost 5.1 F1 points against the float
    model; one scale per output channel brings it within a point (benchmarks/RESULTS.md).

    The per-channel scales are not written as per-channel quantization parameters:
    TensorFlow 2.16's interpreter runs those, but the TFLite runtime inside the Task
    Library (tflite-support 0.4.4) reads only the first scale of a hybrid
    FULLY_CONNECTED's weights and answered nonsense. So each row c of the weights W is
    divided by its largest magnitude s_c before the per-tensor int8 quantization (every
    row then uses the full int8 range: the same codes a per-channel scale would give),
    the bias b becomes b / s_c, and a float MUL by s after the op restores
    y = s * (W/s x + b/s) = W x + b. Every TFLite runtime runs that as it is.

    The float weights come from a float conversion of the same function: it has the same
    FULLY_CONNECTED ops in the same order, which is checked, weight by weight, rather
    than assumed.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    quantized = flatbuffer_utils.convert_bytearray_to_object(bytearray(dynamic_model))
    reference = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_model))
    graph = quantized.subgraphs[0]
    ops, float_weights_of = _fully_connected_ops(quantized), _fully_connected_weights(reference)
    if len(ops) != len(float_weights_of):
        raise ValueError("The dynamic-range and float conversions have different FULLY_CONNECTED ops.")
    mul_code = _opcode_index(quantized, schema.BuiltinOperator.MUL)
    rescales = []  # (op, MUL op to run right after it)
    for number, (op, float_weights) in enumerate(zip(ops, float_weights_of, strict=True)):
        weights = graph.tensors[op.inputs[1]]
        if weights.type != schema.TensorType.INT8:
            continue  # too small to quantize (the converter keeps those float)
        if op.builtinOptions is not None and op.builtinOptions.fusedActivationFunction != 0:
            continue  # a fused activation would run before the rescale; keep the converter's weights
        values = np.frombuffer(bytes(reference.buffers[float_weights.buffer].data), np.float32)
        values = values.reshape(list(float_weights.shape))  # (out_channels, in_channels)
        _check_same_weights(weights, quantized.buffers[weights.buffer].data, values)
        row_max = np.abs(values).max(axis=1)  # (out_channels,)
        row_max[row_max == 0] = 1.0
        codes = np.clip(np.round(values / row_max[:, None] * 127.0), -127, 127).astype(np.int8)
        quantized.buffers[weights.buffer].data = np.frombuffer(codes.tobytes(), np.uint8)
        weights.quantization.scale = np.array([1.0 / 127.0], np.float32)
        weights.quantization.zeroPoint = np.zeros(1, np.int64)

        if len(op.inputs) > 2 and op.inputs[2] >= 0:  # the bias, divided by s in a tensor of its own
            bias_tensor = graph.tensors[op.inputs[2]]
            bias = np.frombuffer(bytes(quantized.buffers[bias_tensor.buffer].data), np.float32)
            op.inputs[2] = _constant(quantized, bias / row_max, f"{bias_tensor.name.decode()}/per_channel")
        output = op.outputs[0]
        unscaled = schema.TensorT()
        unscaled.name = graph.tensors[output].name + b"/unscaled"
        unscaled.type = schema.TensorType.FLOAT32
        unscaled.shape = graph.tensors[output].shape
        unscaled.shapeSignature = graph.tensors[output].shapeSignature
        unscaled.buffer = 0  # the empty buffer: computed at run time
        graph.tensors.append(unscaled)
        op.outputs[0] = len(graph.tensors) - 1
        mul = schema.OperatorT()
        mul.opcodeIndex = mul_code
        mul.inputs = np.array([op.outputs[0], _constant(quantized, row_max, f"dense_{number}/channel_scale")],
                              np.int32)
        mul.outputs = np.array([output], np.int32)
        mul.builtinOptionsType = schema.BuiltinOptions.MulOptions
        mul.builtinOptions = schema.MulOptionsT()
        rescales.append((op, mul))
    for op, mul in rescales:
        graph.operators.insert(next(i for i, o in enumerate(graph.operators) if o is op) + 1, mul)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(quantized))


def _check_same_weights(weights, data, float_values: np.ndarray) -> None:
    """The converter's per-tensor int8 weights must dequantize to `float_values` within one step."""
    scale = np.asarray(weights.quantization.scale, np.float32)
    if list(weights.shape) != list(float_values.shape) or scale.size != 1:
        raise ValueError(f"Cannot pair quantized weights {weights.name!r} {list(weights.shape)} with float "
                         f"weights {list(float_values.shape)}.")
    dequantized = np.frombuffer(bytes(data), np.int8).reshape(float_values.shape) * scale[0]
    if np.abs(dequantized - float_values).max() > scale[0]:
        raise ValueError(f"Quantized weights {weights.name!r} are not a quantization of their float counterpart.")


# --- Interpreter helpers -----------------------------------------------------------------------


def _signature_runner(interpreter: tf.lite.Interpreter):
    """The model's one signature, checked to have the contract's inputs and outputs."""
    keys = list(interpreter.get_signature_list())
    if len(keys) != 1:
        raise ValueError(f"Expected a TFLite model with exactly one signature, found {keys}.")
    runner = interpreter.get_signature_runner(keys[0])
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if set(inputs) != set(INPUT_NAMES) or set(outputs) != set(OUTPUT_NAMES):
        raise ValueError(
            f"The TFLite signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
            f"expected {sorted(INPUT_NAMES)} and {sorted(OUTPUT_NAMES)}."
        )
    return runner


def task_library_io_problems(tflite_model: bytes) -> list[str]:
    """Why the Task Library could not feed or read this model's tensors; empty if it can."""
    interpreter = tf.lite.Interpreter(model_content=tflite_model)
    runner = _signature_runner(interpreter)
    problems = []
    # The sequence length is task_library_incompatibilities' business; here only what
    # the export itself could get wrong: one window per run, int32 ids, float32 logits.
    for name, details in runner.get_input_details().items():
        shape = list(details["shape"])
        if details["dtype"] != np.int32 or len(shape) != 2 or shape[0] != 1:
            problems.append(
                f"Input {name} is {details['dtype'].__name__}{shape}; the Task Library writes int32[1, seq]."
            )
    for name, details in runner.get_output_details().items():
        if details["dtype"] != np.float32:
            problems.append(f"Output {name} is {details['dtype'].__name__}; the Task Library reads float32.")
    return problems


# --- Metadata ------------------------------------------------------------------------------


def add_task_library_metadata(tflite_model: bytes, vocab_path: str) -> bytes:
    """The model with BertQuestionAnswerer metadata and `vocab_path` packed in.

    Tensors are matched to metadata through the signature, never by position: the
    converter orders inputs and outputs by name (end_logits before start_logits).
    """
    from tensorflow_lite_support.metadata.python.metadata_writers import metadata_info, metadata_writer

    if not tf.io.gfile.exists(vocab_path):
        raise FileNotFoundError(f"Vocabulary {vocab_path} does not exist.")
    interpreter = tf.lite.Interpreter(model_content=tflite_model)
    runner = _signature_runner(interpreter)
    input_tensor_names = {name: d["name"] for name, d in runner.get_input_details().items()}
    input_md = metadata_info.BertInputTensorsMd(
        bytearray(tflite_model),
        input_tensor_names["input_word_ids"],
        input_tensor_names["input_mask"],
        input_tensor_names["input_type_ids"],
        tokenizer_md=metadata_info.BertTokenizerMd(vocab_path),
    )

    # interpreter.get_output_details() lists the subgraph's outputs in flatbuffer
    # order, which is the order the output metadata must follow.
    signature_name_by_index = {d["index"]: name for name, d in runner.get_output_details().items()}
    descriptions = {
        "start_logits": "Logit of each token being the first token of the answer.",
        "end_logits": "Logit of each token being the last token of the answer.",
    }
    output_metadata = []
    for details in interpreter.get_output_details():
        name = signature_name_by_index[details["index"]]
        md = metadata_info.TensorMd(name=TASK_LIBRARY_OUTPUT_NAMES[name], description=descriptions[name])
        output_metadata.append(md.create_metadata())

    general_md = metadata_info.GeneralMd(
        name="BertQuestionAnswerer",
        description="Finds the answer to a question as a span of the context (BERT, SQuAD format).",
    )
    writer = metadata_writer.MetadataWriter.create_from_metadata(
        bytearray(tflite_model),
        model_metadata=general_md.create_metadata(),
        input_metadata=input_md.create_input_tesnor_metadata(),  # sic: the library's spelling
        output_metadata=output_metadata,
        associated_files=input_md.get_tokenizer_associated_files(),
        input_process_units=input_md.create_input_process_unit_metadata(),
    )
    return bytes(writer.populate())


# --- Vocabularies ----------------------------------------------------------------------------


def saved_model_vocab_path(saved_model_dir: str) -> str:
    """The vocab.txt a trainer SavedModel ships as an asset (bertqa.serving tracks it)."""
    path = os.path.join(saved_model_dir, "assets", "vocab.txt")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{saved_model_dir} has no assets/vocab.txt; give the vocabulary explicitly.")
    return path


def packed_vocab(tflite_path: str) -> bytes:
    """The vocab.txt packed into an exported model's metadata (what the Task Library tokenizes with)."""
    from tensorflow_lite_support.metadata.python import metadata

    displayer = metadata.MetadataDisplayer.with_model_file(tflite_path)
    if "vocab.txt" not in displayer.get_packed_associated_file_list():
        raise ValueError(f"{tflite_path} has no vocab.txt packed in its metadata; give the vocabulary explicitly.")
    return displayer.get_associated_file_buffer("vocab.txt")


# --- Export ------------------------------------------------------------------------------


def _write_bytes(content: bytes, output_path: str) -> None:
    parent = os.path.dirname(output_path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(output_path, "wb") as f:
        f.write(content)


def _local_vocab(vocab_path: str, scratch_dir: str) -> str:
    # The metadata populator reads associated files with plain open(); copy remote
    # vocabularies (gs://, ...) next to us first. The packed name stays the basename.
    if os.path.exists(vocab_path):
        return vocab_path
    local = os.path.join(scratch_dir, os.path.basename(vocab_path))
    tf.io.gfile.copy(vocab_path, local, overwrite=True)
    return local


# A question whose WordPiece tokens are the same for our tokenizer and the Task Library's
# (lower-case ASCII words), so both feed the model the same ids.
_PROBE_QUESTION = "where did the team play the final game of the season"
_PROBE_CONTEXT = ("the team played the final game of the season in denver on a cold night in february , "
                  "and the coach said after the game that the players had worked hard all year long .")
# How far the Task Library's logit of an answer may be from the interpreter's: 0.25 + 5% of
# the logit. The Task Library's runtime is an older TFLite whose hybrid (dynamic-range)
# kernels round activations slightly differently, and a flipped int8 code propagates: 0.126
# on a logit of about 8 was seen for a correctly read file. A runtime that reads the file
# otherwise is off by far more (per-channel parameters misread: 1.04 against 2.51).
_LOGIT_TOLERANCE = 0.25
_LOGIT_RELATIVE_TOLERANCE = 0.05


def _task_library_run_problems(model: bytes, scratch_dir: str, vocab_path: str, config: TfliteExportConfig,
                               ) -> list[str]:
    """Why the Task Library cannot run the file, or runs it otherwise than TensorFlow Lite's interpreter.

    Proves on the spot that the Task Library loads the file and answers (e.g. that every
    op of this quantization has a kernel its builtin op resolver knows), and that the
    span logits it answers with are the ones the interpreter computes: the metrics of the
    file are measured with the interpreter, and the app runs the Task Library's own
    TFLite runtime. Only for models without known problems: feeding those could abort
    the process.
    """
    from bertqa import windowing
    from bertqa.raw_example import SquadExample
    from bertqa.task_library import create_question_answerer, task_library_load_problems
    from bertqa.tokenization import TokenizerConfig, cached_tokenizer

    local = os.path.join(scratch_dir, "task_library_check.tflite")
    with open(local, "wb") as f:
        f.write(model)
    problems = task_library_load_problems(local)
    if problems:
        return problems
    # The probe windowed as the pipeline windows text; it fits one window, as it does for the Task Library.
    probe = SquadExample(id="probe", title="probe", context=_PROBE_CONTEXT, question=_PROBE_QUESTION)
    (window,), _ = windowing.make_windows(
        [probe], cached_tokenizer(TokenizerConfig(vocab_path, config.do_lower_case)),
        windowing.WindowConfig(seq_len=config.seq_len, query_len=config.query_len), is_training=False)
    inputs = pad_window({name: np.asarray(getattr(window, name)) for name in INPUT_NAMES}, config.seq_len)
    outputs = _signature_runner(tf.lite.Interpreter(model_path=local))(**inputs)
    starts, ends = outputs["start_logits"][0], outputs["end_logits"][0]
    answers = create_question_answerer(local).answer(_PROBE_CONTEXT, _PROBE_QUESTION).answers
    if not answers:
        # An untrained model may put every top start after every top end; then there is nothing to
        # compare, which says nothing about the runtime.
        _log.info("The Task Library found no answer to the probe question; its logits were not compared.")
        return []
    expected = [float(starts[a.pos.start] + ends[a.pos.end]) for a in answers]
    gaps = [abs(a.pos.logit - want) for a, want in zip(answers, expected, strict=True)]
    limits = [_LOGIT_TOLERANCE + _LOGIT_RELATIVE_TOLERANCE * abs(want) for want in expected]
    if any(gap > limit for gap, limit in zip(gaps, limits, strict=True)):
        return [f"The Task Library's BertQuestionAnswerer runs the model otherwise than TensorFlow Lite's "
                f"interpreter (its answer logits differ by up to {max(gaps):.3f} on a probe question): its "
                "runtime reads some op of this file differently, so the metrics measured here would not hold "
                "in an app."]
    return []


def export_tflite(
    saved_model_dir: str,
    vocab_path: str,
    output_path: str,
    config: TfliteExportConfig,
    quantization: QuantizationConfig,
    representative_windows: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> ExportResult:
    """Converts, quantizes and annotates the model, and writes it to `output_path`.

    The file is written even when the Task Library cannot run it faithfully (our own
    TfliteQaRunner can); `warnings` then says why. A model without known problems is
    loaded and asked a probe question through the Task Library before returning, and
    the logits of its answers are compared with the interpreter's.
    """
    model = convert_saved_model(saved_model_dir, config, quantization, representative_windows)
    incompatibilities = task_library_incompatibilities(config)
    failures = task_library_io_problems(model)
    with tempfile.TemporaryDirectory() as scratch:
        local_vocab = _local_vocab(vocab_path, scratch)
        model = add_task_library_metadata(model, local_vocab)
        if not incompatibilities and not failures:
            failures += _task_library_run_problems(model, scratch, local_vocab, config)
    _write_bytes(model, output_path)
    warnings = incompatibilities + failures
    for warning in warnings:
        _log.warning("%s: %s", output_path, warning)
    return ExportResult(path=output_path, size_bytes=len(model), warnings=tuple(warnings),
                        task_library_failures=tuple(failures))


# --- Running the exported model on windows ---------------------------------------------------


def _progress(iterable, description: str, unit: str):
    """A tqdm bar on stderr around `iterable`, shown only when stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, unit=unit, disable=None, leave=False)


def median_latency_seconds(
    path: str, window: Mapping[str, np.ndarray], num_threads: int, runs: int = 10, warmup: int = 2
) -> float:
    """Median wall time of one [1, seq_len] run of `window` (zero-padded): one Task Library question.

    The Task Library answers a question with exactly one window, so this is the
    model's latency per question on this machine; the median of `runs` timed runs
    after `warmup` untimed ones (the first run allocates and packs weights).
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be at least 1 and warmup at least 0, got {runs} and {warmup}.")
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    runner = _signature_runner(interpreter)
    seq_len = int(runner.get_input_details()["input_word_ids"]["shape"][-1])
    inputs = pad_window(window, seq_len)
    for _ in range(warmup):
        runner(**inputs)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        runner(**inputs)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


class TfliteQaRunner:
    """Runs an exported QA model on already-padded [batch, seq_len] int32 windows.

    The model loads with batch 1 (the Task Library's shape). A model with a static batch
    of 1 (the default export, so that XNNPACK runs it) runs windows one at a time. For
    models exported with `resizable_batch`, batches are tried by resizing the inputs to
    [batch, seq_len]; a model whose graph froze the batch of 1 into its shapes anyway (the
    converter turns the attention mask's expand_dims into a constant reshape) fails to
    resize, and then, for good, windows are run one at a time. The first batched run is
    also checked against a single-window run, so a resize that "works" but computes
    something else is caught rather than scored.
    `num_threads` is the interpreter's CPU threads (None: TFLite's default).
    """

    def __init__(self, path: str, num_threads: int | None = 1):
        self._interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
        self._runner = _signature_runner(self._interpreter)
        shape = self._runner.get_input_details()["input_word_ids"]["shape"]
        self.seq_len = int(shape[-1])
        signature = self._runner.get_input_details()["input_word_ids"]["shape_signature"]
        # Unknown until the first batch of more than one, unless the batch is static.
        self._batching: bool | None = False if int(signature[0]) == 1 else None

    @property
    def batching_supported(self) -> bool | None:
        """Whether batches run in one invocation; None until a batch has been tried."""
        return self._batching

    def run(
        self, input_word_ids: np.ndarray, input_mask: np.ndarray, input_type_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(start_logits, end_logits), each float32 [batch, seq_len]."""
        inputs = self._validated(input_word_ids, input_mask, input_type_ids)
        batch = inputs["input_word_ids"].shape[0]
        if batch == 0:
            empty = np.zeros((0, self.seq_len), np.float32)
            return empty, empty.copy()
        if batch == 1 or self._batching is False:
            return self._run_one_by_one(inputs)
        try:
            outputs = self._invoke(inputs)
        except (RuntimeError, ValueError) as error:
            _log.info("Batched TFLite run failed (%s); running windows one at a time.", error)
            self._batching = False
            return self._run_one_by_one(inputs)
        if self._batching is None:
            self._batching = self._matches_single_run(inputs, outputs)
            if not self._batching:
                _log.warning("Batched TFLite run disagrees with single-window runs; running one at a time.")
                return self._run_one_by_one(inputs)
        return outputs

    def _validated(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        inputs = {}
        for name, array in zip(INPUT_NAMES, arrays, strict=True):
            array = np.asarray(array)
            if array.ndim != 2 or array.shape[1] != self.seq_len:
                raise ValueError(f"{name} must be [batch, {self.seq_len}], got {list(array.shape)}.")
            inputs[name] = array.astype(np.int32, copy=False)
        if len({a.shape[0] for a in inputs.values()}) != 1:
            raise ValueError(f"Inputs disagree on batch size: {[list(a.shape) for a in inputs.values()]}.")
        return inputs

    def _invoke(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # The signature runner resizes the inputs to the arrays' shapes and
        # re-allocates tensors when they change (resize_tensor_input + allocate_tensors).
        outputs = self._runner(**inputs)
        return outputs["start_logits"].copy(), outputs["end_logits"].copy()

    def _run_one_by_one(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = [], []
        for i in range(inputs["input_word_ids"].shape[0]):
            start, end = self._invoke({name: array[i : i + 1] for name, array in inputs.items()})
            starts.append(start)
            ends.append(end)
        return np.concatenate(starts), np.concatenate(ends)

    def _matches_single_run(
        self, inputs: dict[str, np.ndarray], batched: tuple[np.ndarray, np.ndarray]
    ) -> bool:
        single = self._invoke({name: array[:1] for name, array in inputs.items()})
        return all(np.allclose(b[:1], s, rtol=1e-3, atol=1e-3) for b, s in zip(batched, single, strict=True))


# --- What XNNPACK takes ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DelegateReport:
    """How much of a .tflite the XNNPACK delegate (TFLite's CPU backend, as on phones) runs.

    `nodes` counts the model's ops, `delegated` those inside XNNPACK partitions, and `outside`
    the rest by op name (they run on TFLite's builtin kernels). A model with a dynamic-sized
    tensor (`dynamic_tensors`, by name) gets no XNNPACK at all.
    """

    nodes: int
    delegated: int
    partitions: int
    outside: tuple[tuple[str, int], ...]
    dynamic_tensors: tuple[str, ...]

    def summary(self) -> str:
        if self.dynamic_tensors:
            return f"XNNPACK off ({len(self.dynamic_tensors)} dynamic-sized tensors, e.g. {self.dynamic_tensors[0]})"
        rest = ", ".join(f"{name} {count}" for name, count in self.outside) or "none"
        return f"XNNPACK {self.delegated}/{self.nodes} ops in {self.partitions} partitions (outside: {rest})"

    def to_json(self) -> dict:
        return {"nodes": self.nodes, "delegated": self.delegated, "partitions": self.partitions,
                "outside": dict(self.outside), "dynamic_tensors": list(self.dynamic_tensors)}


def xnnpack_report(path: str) -> DelegateReport:
    """Which ops of the file TensorFlow Lite's default XNNPACK delegate takes.

    The interpreter applies XNNPACK when it allocates tensors and then lists one DELEGATE
    node per partition beside the original nodes, without saying which original nodes a
    partition swallowed. An original node ran outside XNNPACK exactly when its outputs are
    neither a partition's outputs nor left unallocated (a tensor internal to a partition
    gets no memory in TFLite's arena).
    """
    import collections

    interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
    dynamic = tuple(d["name"] for d in interpreter.get_tensor_details() if -1 in list(d["shape_signature"]))
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001 (the interpreter's only view of its nodes)
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    partition_outputs = {int(t) for op in partitions for t in op["outputs"]}

    def allocated(tensor: int) -> bool:
        try:
            interpreter.get_tensor(tensor)
        except ValueError:  # "Tensor data is null": internal to a partition
            return False
        return True

    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    outputs = {op["index"]: [int(t) for t in op["outputs"]] for op in originals}
    outside = collections.Counter(
        op["op_name"] for op in originals
        if not partition_outputs.intersection(outputs[op["index"]]) and all(map(allocated, outputs[op["index"]])))
    return DelegateReport(nodes=len(originals), delegated=len(originals) - sum(outside.values()),
                          partitions=len(partitions), outside=tuple(sorted(outside.items())),
                          dynamic_tensors=dynamic)
