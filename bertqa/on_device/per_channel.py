"""Per-channel int8 weights for the dynamic-range model, written into the TFLite flatbuffer.

See per_channel_dense_weights for why the scales are folded into the weights and a float MUL
rather than written as per-channel quantization parameters.
"""

from __future__ import annotations

import numpy as np


def _builtin_code(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _fully_connected_ops(model, subgraph: int) -> list:
    """Every FULLY_CONNECTED op of a subgraph, in op order."""
    from tensorflow.lite.python import schema_py_generated as schema

    return [op for op in model.subgraphs[subgraph].operators
            if _builtin_code(model, op) == schema.BuiltinOperator.FULLY_CONNECTED]


def _fully_connected_weights(model, subgraph: int) -> list:
    """The weight tensor (input 1) of every FULLY_CONNECTED op of a subgraph, in op order."""
    graph = model.subgraphs[subgraph]
    return [graph.tensors[op.inputs[1]] for op in _fully_connected_ops(model, subgraph)]


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


def _constant(model, subgraph: int, values: np.ndarray, name: str, buffers: dict[bytes, int]) -> int:
    """A new float32 constant tensor in a subgraph; returns its index. Its buffer is shared with every
    constant of the same bytes made before (`buffers`), as the converter shares weights between
    signatures, so that each signature of a file does not carry its own copy."""
    from tensorflow.lite.python import schema_py_generated as schema

    content = np.ascontiguousarray(values, np.float32).tobytes()
    if content not in buffers:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(content, np.uint8)
        model.buffers.append(buffer)
        buffers[content] = len(model.buffers) - 1
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = name.encode(), schema.TensorType.FLOAT32, buffers[content]
    tensor.shape = np.asarray(values.shape, np.int32)
    graph = model.subgraphs[subgraph]
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
    than assumed. Every subgraph (one per window length, bertqa.on_device.signatures) is
    rewritten; their weights share buffers, which are rewritten once. `float_model` may have
    one subgraph for all of them.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    quantized = flatbuffer_utils.convert_bytearray_to_object(bytearray(dynamic_model))
    reference = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_model))
    if len(reference.subgraphs) not in (1, len(quantized.subgraphs)):
        raise ValueError("The dynamic-range and float conversions have different subgraphs.")
    mul_code = _opcode_index(quantized, schema.BuiltinOperator.MUL)
    rewritten: dict[int, bytes] = {}  # weight buffer -> the per-row codes written into it
    constants: dict[bytes, int] = {}
    for subgraph in range(len(quantized.subgraphs)):
        graph = quantized.subgraphs[subgraph]
        # A float conversion of one signature serves every subgraph (the same weights, the same op order;
        # checked weight by weight below).
        ops = _fully_connected_ops(quantized, subgraph)
        float_weights_of = _fully_connected_weights(reference, subgraph if len(reference.subgraphs) > 1 else 0)
        if len(ops) != len(float_weights_of):
            raise ValueError("The dynamic-range and float conversions have different FULLY_CONNECTED ops.")
        rescales = []  # (op, MUL op to run right after it)
        for number, (op, float_weights) in enumerate(zip(ops, float_weights_of, strict=True)):
            weights = graph.tensors[op.inputs[1]]
            if weights.type != schema.TensorType.INT8:
                continue  # too small to quantize (the converter keeps those float)
            if op.builtinOptions is not None and op.builtinOptions.fusedActivationFunction != 0:
                continue  # a fused activation would run before the rescale; keep the converter's weights
            values = np.frombuffer(bytes(reference.buffers[float_weights.buffer].data), np.float32)
            values = values.reshape(list(float_weights.shape))  # (out_channels, in_channels)
            row_max = np.abs(values).max(axis=1)  # (out_channels,)
            row_max[row_max == 0] = 1.0
            codes = np.clip(np.round(values / row_max[:, None] * 127.0), -127, 127).astype(np.int8).tobytes()
            if weights.buffer in rewritten:  # shared with a subgraph rewritten before: the same weights?
                if rewritten[weights.buffer] != codes:
                    raise ValueError(f"Quantized weights {weights.name!r} are shared by subgraphs whose float "
                                     "weights differ.")
            else:
                _check_same_weights(weights, quantized.buffers[weights.buffer].data, values)
                quantized.buffers[weights.buffer].data = np.frombuffer(codes, np.uint8)
                rewritten[weights.buffer] = codes
            weights.quantization.scale = np.array([1.0 / 127.0], np.float32)
            weights.quantization.zeroPoint = np.zeros(1, np.int64)

            if len(op.inputs) > 2 and op.inputs[2] >= 0:  # the bias, divided by s in a tensor of its own
                bias_tensor = graph.tensors[op.inputs[2]]
                bias = np.frombuffer(bytes(quantized.buffers[bias_tensor.buffer].data), np.float32)
                op.inputs[2] = _constant(quantized, subgraph, bias / row_max,
                                         f"{bias_tensor.name.decode()}/per_channel", constants)
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
            mul.inputs = np.array([op.outputs[0], _constant(quantized, subgraph, row_max,
                                                            f"dense_{number}/channel_scale", constants)], np.int32)
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
