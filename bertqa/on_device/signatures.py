"""Several window lengths in one .tflite: the signature names, the subgraph order, choosing a length.

A question with its paragraph needs about 164 tokens at the median of held-out SQuAD, yet a
file with one [1, 384] input pays for 384 on every question. The exported file therefore has
one static signature per window length (ON_DEVICE_WINDOW_LENGTHS, named `seq_<L>`), all over
one copy of the weights: the converter stores identical constant buffers once, so a signature
costs the file only its length-dependent constants (its position-embedding rows). Static
shapes, not one dynamic sequence dimension: with a dynamic length the attention's RESHAPEs
take shapes computed at run time, which LiteRT's XNNPACK leaves to the builtin kernels (58
delegate partitions instead of one per attention matmul, and slower at every length here;
benchmarks/RESULTS.md), and its [1, 1] default shape is nothing the Task Library can run.

Subgraph 0 is the longest signature: tflite-support's BertQuestionAnswerer runs the model's
primary subgraph with exactly 384 tokens, and the metadata it reads describes that subgraph.
The converter orders subgraphs by signature name (seq_128 before seq_384), so
`arrange_signatures` moves the longest to the front.

An app picks the smallest signature that holds its window: `smallest_fitting`.
"""

from __future__ import annotations

from collections.abc import Iterable

SIGNATURE_PREFIX = "seq_"


def signature_key(seq_len: int) -> str:
    """The .tflite signature that takes windows of `seq_len` tokens."""
    return f"{SIGNATURE_PREFIX}{seq_len}"


def window_lengths(longest: int, lengths: Iterable[int]) -> tuple[int, ...]:
    """`longest` and every shorter one of `lengths`, longest first, without repeats."""
    return (longest, *sorted({n for n in lengths if 0 < n < longest}, reverse=True))


def smallest_fitting(lengths: Iterable[int], tokens: int) -> int:
    """The smallest of `lengths` that holds `tokens` tokens."""
    fitting = [n for n in lengths if n >= tokens]
    if not fitting:
        raise ValueError(f"A window of {tokens} tokens fits none of the model's lengths {sorted(lengths)}.")
    return min(fitting)


# Builtin operators whose options name other subgraphs by index: moving subgraphs would break them.
_CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE")


def arrange_signatures(model: bytes) -> bytes:
    """The model with the subgraph of its longest input first, the signature indices to match, and
    every signature named seq_<L> (the converter names a file's only signature serving_default).

    Refuses a model with control flow, whose operators point at subgraphs by index.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    if len(parsed.subgraphs) < 2:
        for signature in parsed.signatureDefs or []:
            graph = parsed.subgraphs[signature.subgraphIndex]
            signature.signatureKey = signature_key(int(graph.tensors[graph.inputs[0]].shape[-1])).encode()
        return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))
    names = {getattr(schema.BuiltinOperator, name) for name in _CONTROL_FLOW}
    codes = {max(code.builtinCode, code.deprecatedBuiltinCode) for code in parsed.operatorCodes}
    if codes & names:
        raise ValueError("The model has control-flow operators that refer to subgraphs by index; "
                         "its subgraphs cannot be reordered.")

    def length(index: int) -> int:
        graph = parsed.subgraphs[index]
        return int(graph.tensors[graph.inputs[0]].shape[-1])

    order = sorted(range(len(parsed.subgraphs)), key=length, reverse=True)
    if order[0] == 0:
        return model
    new_index = {old: new for new, old in enumerate(order)}
    parsed.subgraphs = [parsed.subgraphs[old] for old in order]
    for signature in parsed.signatureDefs:
        signature.subgraphIndex = new_index[signature.subgraphIndex]
    parsed.signatureDefs.sort(key=lambda signature: signature.subgraphIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))
