"""Checks a model path given to `bertqa predict` / `bertqa evaluate` before anything loads it.

TensorFlow Lite's Python interpreter does not verify the flatbuffer it is given: a .tflite
cut short, or random bytes behind the "TFL3" identifier, make `tf.lite.Interpreter`
segfault. The Task Library's BertQuestionAnswerer does verify it, but then runs a model
whose tensors have other shapes than it expects (it reads 384 logits from each output
whatever the output holds). So a .tflite is read here first, in Python, with the TFLite and
metadata flatbuffer schemas tflite-support ships (no TensorFlow import: a bad file is
refused in well under a second):

- the "TFL3" identifier at bytes 4..8, then the whole model through the schema's object
  API (every table, vector and string it reaches; an offset past the end of a truncated
  file raises) and the tensor, buffer and operator indices the runtime follows;
- the metadata, if any, through the metadata schema, and the files packed in the zip
  appended to the model (vocab.txt), CRC included;
- the tensors: three int32 [1, seq_len] inputs (ids, mask, segment ids) and two float32
  [1, seq_len] outputs (start and end logits), named by the model's signature
  (`bertqa.on_device.conversion.INPUT_NAMES`) or its Task Library metadata (`ids`, `mask`, ...).

What each command then needs on top: `evaluate` the signature (TfliteQaRunner runs the
file through it) and a vocabulary (packed, or given); `predict` the Task Library metadata,
a packed vocabulary and windows of 384 tokens. A SavedModel's saved_model.pb is parsed and
the signature the command calls is checked (`serving_default` for predict, `logits` for
evaluate) before TensorFlow loads it, without importing TensorFlow either.

These checks catch damaged files and models of another kind. They are no defence against a
file crafted to exploit the TFLite runtime: run only models of known origin.
Every problem is raised as a ModelFileError whose message names the path, says what is
wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import struct
import zipfile

# The contract of bertqa.on_device.conversion (which imports TensorFlow, so not imported here;
# tests/test_hostile_models.py checks the two agree).
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")
TASK_LIBRARY_INPUT_NAMES = {"input_word_ids": "ids", "input_mask": "mask", "input_type_ids": "segment_ids"}
TASK_LIBRARY_OUTPUT_NAMES = {"start_logits": "start_logits", "end_logits": "end_logits"}
TASK_LIBRARY_SEQ_LEN = 384
LOGITS_SIGNATURE = "logits"
SERVING_SIGNATURE = "serving_default"

TFLITE_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
_METADATA_NAME = b"TFLITE_METADATA"  # tflite_support's MetadataPopulator.METADATA_FIELD_NAME

_EXPORT_HINT = "Export it again (`bertqa export`, or the pipeline) or copy it again from where it was made."
_QA_CONTRACT = (
    "three int32 [1, seq_len] inputs (input_word_ids, input_mask, input_type_ids; named ids, mask and "
    "segment_ids in Task Library metadata) and two float32 [1, seq_len] outputs (start_logits, end_logits)")


class ModelFileError(ValueError):
    """A model path `bertqa predict` / `evaluate` cannot use: missing, damaged, or not a BERT QA model.

    The message names the path, the problem and what to do; the CLI prints it as one
    `error:` line.
    """


@dataclasses.dataclass(frozen=True)
class TfliteQaModel:
    """What the checks found in a .tflite that has the QA model's tensors."""

    path: str
    seq_len: int
    signature_keys: tuple[str, ...]  # of the model's signatures
    has_qa_signature: bool  # subgraph 0 has a signature with INPUT_NAMES and OUTPUT_NAMES (what TfliteQaRunner runs)
    has_task_library_metadata: bool  # tensor names and a tokenizer, its files packed (what BertQuestionAnswerer reads)
    packed_files: tuple[str, ...]  # files in the appended zip, each read and CRC-checked

    @property
    def has_packed_vocab(self) -> bool:
        return "vocab.txt" in self.packed_files


# --- Which kind of model a path is -------------------------------------------------------------


def _looks_like_tflite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False


def model_kind(path: str) -> tuple[str, str]:
    """('tflite', file) or ('saved_model', dir); a pushed serving directory means its model.tflite."""
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such file or directory. Give a .tflite file (such as "
                             "runs/bertqa/serving/<version>/model.tflite) or a SavedModel directory.")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "saved_model", path
        if os.path.isfile(os.path.join(path, "model.tflite")):
            return "tflite", os.path.join(path, "model.tflite")
        raise ModelFileError(
            f"{path}: neither a .tflite file nor a SavedModel directory (a directory without saved_model.pb "
            "or model.tflite). Give the trainer's SavedModel directory, a pushed serving directory or a .tflite file.")
    if not os.path.isfile(path):  # a device or a pipe: reading it to the end might never return
        raise ModelFileError(f"{path}: not a regular file. Give a .tflite file or a SavedModel directory.")
    if path.endswith(".tflite") or _looks_like_tflite(path):
        return "tflite", path
    raise ModelFileError(f"{path}: neither a .tflite file nor a SavedModel directory (a file without the TFLite "
                         "identifier). Give a .tflite file or a SavedModel directory.")


# --- .tflite -----------------------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read the file ({error.strerror or error}).") from error


def _parse_model(path: str, data: bytes):
    from tensorflow_lite_support.metadata import schema_py_generated as schema

    if not data:
        raise ModelFileError(f"{path}: an empty file (0 bytes), not a TFLite model. {_EXPORT_HINT}")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{path}: not a TFLite model (a TFLite flatbuffer has the identifier TFL3 at bytes "
                             f"4..8, this file has {data[4:8]!r}). {_EXPORT_HINT}")
    try:
        # The object API reads every table, vector and string the model reaches; on a truncated
        # or garbled file an offset points past the end and the read raises.
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
        problem = _index_problem(model) or _external_buffer_problem(schema.Model.GetRootAs(data, 0), len(data))
    except Exception as error:  # noqa: BLE001 (any failure to read untrusted bytes means the same)
        problem = f"{'struct.error' if isinstance(error, struct.error) else type(error).__name__}: {error}"
    if problem:
        raise ModelFileError(f"{path}: a truncated or corrupt TFLite file ({len(data)} bytes; {problem}). "
                             f"{_EXPORT_HINT}")
    return model


def _index_problem(model) -> str | None:
    """The first tensor, buffer, operator or signature index that points nowhere, if any."""
    buffers, codes, graphs = len(model.buffers or []), len(model.operatorCodes or []), model.subgraphs or []
    if not graphs:
        return "no subgraph"
    for number, graph in enumerate(graphs):
        tensors = graph.tensors or []
        for tensor in tensors:
            if not 0 <= tensor.buffer < max(buffers, 1):
                return f"subgraph {number} has a tensor on buffer {tensor.buffer} of {buffers}"
        for op in graph.operators or []:
            if not 0 <= op.opcodeIndex < codes:
                return f"subgraph {number} has an operator with opcode {op.opcodeIndex} of {codes}"
            for index in [*_ints(op.inputs), *_ints(op.outputs), *_ints(op.intermediates)]:
                if not -1 <= index < len(tensors):
                    return f"subgraph {number} has an operator on tensor {index} of {len(tensors)}"
        for index in [*_ints(graph.inputs), *_ints(graph.outputs)]:
            if not 0 <= index < len(tensors):
                return f"subgraph {number} has input or output tensor {index} of {len(tensors)}"
    for signature in model.signatureDefs or []:
        if not 0 <= signature.subgraphIndex < len(graphs):
            return f"a signature on subgraph {signature.subgraphIndex} of {len(graphs)}"
        size = len(graphs[signature.subgraphIndex].tensors or [])
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            if not 0 <= entry.tensorIndex < size:
                return f"a signature on tensor {entry.tensorIndex} of {size}"
    for entry in model.metadata or []:
        if not 0 <= entry.buffer < buffers:
            return f"metadata on buffer {entry.buffer} of {buffers}"
    return None


def _ints(values) -> list[int]:
    return [] if values is None else [int(value) for value in values]


def _external_buffer_problem(root, size: int) -> str | None:
    """Buffers stored after the flatbuffer (models over 2 GB: Buffer.offset and .size, fields 1 and 2,
    newer than the schema tflite-support ships) must lie inside the file."""
    import flatbuffers

    for i in range(root.BuffersLength()):
        table = root.Buffers(i)._tab
        offset_field, size_field = table.Offset(6), table.Offset(8)
        if not offset_field:
            continue
        offset = table.Get(flatbuffers.number_types.Uint64Flags, offset_field + table.Pos)
        length = table.Get(flatbuffers.number_types.Uint64Flags, size_field + table.Pos) if size_field else 0
        if offset > 1 and offset + length > size:
            return f"buffer {i} lies at bytes {offset}..{offset + length}, past the end"
    return None


def _metadata(path: str, model):
    """The model's ModelMetadataT, or None when it has none."""
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as metadata_schema

    entries = [entry for entry in model.metadata or [] if entry.name == _METADATA_NAME]
    if not entries:
        return None
    data = model.buffers[entries[0].buffer].data
    content = b"" if data is None else bytes(data)
    try:
        if content[4:8] != METADATA_IDENTIFIER:
            raise ValueError(f"identifier {content[4:8]!r} instead of {METADATA_IDENTIFIER!r}")
        return metadata_schema.ModelMetadataT.InitFromObj(metadata_schema.ModelMetadata.GetRootAs(content, 0))
    except Exception as error:  # noqa: BLE001 (any failure to read untrusted bytes means the same)
        raise ModelFileError(f"{path}: its Task Library metadata is corrupt ({type(error).__name__}: {error}). "
                             f"{_EXPORT_HINT}") from error


def _tokenizer_files(metadata) -> list[str]:
    """Files the metadata's tokenizer process units name (vocab.txt, a SentencePiece model)."""
    names = []
    for graph in metadata.subgraphMetadata or []:
        for unit in graph.inputProcessUnits or []:
            options = unit.options
            for field in ("vocabFile", "sentencePieceModel"):
                names += [file.name.decode("utf-8", "replace") for file in getattr(options, field, None) or []
                          if file.name]
    return names


def _packed_files(path: str, data: bytes, needed: list[str]) -> tuple[str, ...]:
    """Names in the zip the metadata writer appends to the model; `needed` ones are read, CRC included."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            for name in needed:
                if name in names:
                    archive.read(name)  # raises on a bad CRC or a cut-off member
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        if not needed:
            return ()
        raise ModelFileError(f"{path}: the {', '.join(needed)} packed in the file cannot be read "
                             f"({error}); the file is truncated or corrupt. {_EXPORT_HINT}") from error
    missing = [name for name in needed if name not in names]
    if missing:
        raise ModelFileError(f"{path}: its metadata names {', '.join(missing)}, but the file does not pack it. "
                             f"{_EXPORT_HINT}")
    return tuple(names)


def _type_name(code: int) -> str:
    from tensorflow_lite_support.metadata import schema_py_generated as schema

    names = {value: name.lower() for name, value in vars(schema.TensorType).items() if name.isupper()}
    return names.get(code, f"type{code}")


def _describe(graph, indices, names: dict[int, str]) -> str:
    described = []
    for index in indices:
        tensor = graph.tensors[index]
        name = names.get(index) or (tensor.name or b"").decode("utf-8", "replace")
        described.append(f"{name} {_type_name(tensor.type)}{_ints(tensor.shape)}")
    return "[" + ", ".join(described) + "]"


def inspect_tflite(path: str) -> TfliteQaModel:
    """Reads and checks a .tflite (see the module docstring); raises ModelFileError unless it is a QA model."""
    from tensorflow_lite_support.metadata import schema_py_generated as schema

    data = _read(path)
    model = _parse_model(path, data)
    metadata = _metadata(path, model)
    packed = _packed_files(path, data, _tokenizer_files(metadata) if metadata else [])

    graph = model.subgraphs[0]
    inputs, outputs = _ints(graph.inputs), _ints(graph.outputs)
    signatures = model.signatureDefs or []
    signature_keys = tuple((s.signatureKey or b"").decode("utf-8", "replace") for s in signatures)
    # Role of each input / output tensor: by the signature, else by the Task Library metadata.
    sig_names: dict[int, str] = {}
    for signature in signatures:
        if signature.subgraphIndex == 0:
            for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
                sig_names[entry.tensorIndex] = (entry.name or b"").decode("utf-8", "replace")
    md_names: dict[int, str] = {}
    if metadata and metadata.subgraphMetadata:
        md_graph = metadata.subgraphMetadata[0]
        for indices, tensor_metadata in ((inputs, md_graph.inputTensorMetadata),
                                         (outputs, md_graph.outputTensorMetadata)):
            for index, md in zip(indices, tensor_metadata or [], strict=False):
                md_names[index] = (md.name or b"").decode("utf-8", "replace")
    contract_name = _invert({**TASK_LIBRARY_INPUT_NAMES, **TASK_LIBRARY_OUTPUT_NAMES})
    roles = {index: contract_name.get(name, name) for index, name in md_names.items()}
    roles.update(sig_names)

    def tensor_ok(index: int, dtype: int, role_names) -> bool:
        tensor = graph.tensors[index]
        shape = _ints(tensor.shape)
        return tensor.type == dtype and len(shape) == 2 and shape[0] == 1 and roles.get(index) in role_names

    shapes = [_ints(graph.tensors[index].shape) for index in inputs + outputs]
    seq_lens = {shape[-1] for shape in shapes if shape}
    if (len(inputs) != 3 or len(outputs) != 2 or len(seq_lens) != 1
            or not all(tensor_ok(i, schema.TensorType.INT32, INPUT_NAMES) for i in inputs)
            or not all(tensor_ok(i, schema.TensorType.FLOAT32, OUTPUT_NAMES) for i in outputs)
            or {roles.get(i) for i in inputs} != set(INPUT_NAMES)
            or {roles.get(i) for i in outputs} != set(OUTPUT_NAMES)):
        names = {**md_names, **sig_names}
        raise ModelFileError(
            f"{path}: not a BERT question-answering model: it has inputs {_describe(graph, inputs, names)} and "
            f"outputs {_describe(graph, outputs, names)}; it needs {_QA_CONTRACT}. Give a model exported by "
            "`bertqa export` or the pipeline.")
    (seq_len,) = seq_lens
    # Subgraph 0's signature (a file has one per window length; bertqa.on_device.signatures).
    has_qa_signature = (any(s.subgraphIndex == 0 for s in signatures)
                        and {sig_names.get(i) for i in inputs} == set(INPUT_NAMES)
                        and {sig_names.get(i) for i in outputs} == set(OUTPUT_NAMES))
    tokenizer = bool(metadata and _tokenizer_files(metadata))
    has_md_names = ({md_names.get(i) for i in inputs} == set(TASK_LIBRARY_INPUT_NAMES.values())
                    and {md_names.get(i) for i in outputs} == set(TASK_LIBRARY_OUTPUT_NAMES.values()))
    return TfliteQaModel(path=path, seq_len=int(seq_len), signature_keys=signature_keys,
                         has_qa_signature=has_qa_signature, has_task_library_metadata=tokenizer and has_md_names,
                         packed_files=packed)


def _invert(mapping: dict[str, str]) -> dict[str, str]:
    return {value: key for key, value in mapping.items()}


def check_tflite_for_task_library(path: str) -> TfliteQaModel:
    """A .tflite the Task Library's BertQuestionAnswerer can run (what `bertqa predict` uses)."""
    model = inspect_tflite(path)
    if not model.has_task_library_metadata:
        raise ModelFileError(
            f"{path}: has no Task Library metadata (tensor names ids, mask, segment_ids, start_logits, end_logits "
            "and a BERT tokenizer with vocab.txt packed in), which `bertqa predict` needs to run it through the "
            "Task Library's BertQuestionAnswerer. Export it with `bertqa export`, which writes the metadata, "
            "or score it with `bertqa evaluate --vocab vocab.txt`.")
    if model.seq_len != TASK_LIBRARY_SEQ_LEN:
        raise ModelFileError(
            f"{path}: takes windows of {model.seq_len} tokens, but the Task Library's BertQuestionAnswerer always "
            f"fills {TASK_LIBRARY_SEQ_LEN}, so it cannot run this file. Score it with `bertqa evaluate`, or export "
            f"the model with seq_len {TASK_LIBRARY_SEQ_LEN}.")
    return model


def check_tflite_for_evaluation(path: str, vocab_given: bool) -> TfliteQaModel:
    """A .tflite TfliteQaRunner can run, with a vocabulary packed unless `vocab_given` (`bertqa evaluate`)."""
    model = inspect_tflite(path)
    if not model.has_qa_signature:
        raise ModelFileError(
            f"{path}: has the QA model's tensors but not one signature naming them {list(INPUT_NAMES)} -> "
            f"{list(OUTPUT_NAMES)} (its signatures: {list(model.signature_keys)}), which `bertqa evaluate` runs "
            "the model through. Export it with `bertqa export`.")
    if not vocab_given and not model.has_packed_vocab:
        raise ModelFileError(f"{path}: has no vocab.txt packed in its metadata; give the vocabulary the model "
                             "was trained with: --vocab vocab.txt.")
    return model


# --- SavedModel --------------------------------------------------------------------------------

# Per signature the CLI calls: inputs and outputs, each name -> dtype name (tensorflow.DType.name).
_SAVED_MODEL_SIGNATURES = {
    SERVING_SIGNATURE: ({"question": "string", "context": "string"}, {"answer": "string", "score": "float32"}),
    LOGITS_SIGNATURE: ({name: "int32" for name in INPUT_NAMES}, {name: "float32" for name in OUTPUT_NAMES}),
}
# tensorflow/core/framework/types.proto's DataType, as tf.DType names.
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 9: "int64",
                10: "bool", 14: "bfloat16", 19: "float16", 20: "resource", 21: "variant"}


@functools.lru_cache(maxsize=1)
def _saved_model_subset_class():
    """A protobuf class reading the part of tensorflow.SavedModel that holds the signatures.

    saved_model.proto and meta_graph.proto cut down to SavedModel.meta_graphs (2) ->
    MetaGraphDef.signature_def (5, a map: entries of key 1 and value 2) -> SignatureDef.inputs
    and .outputs (1, 2, maps) -> TensorInfo.name and .dtype (1, 2), with TensorFlow's field
    numbers: the wire format is the same, the other fields are skipped. It spares importing
    TensorFlow (tensorflow.core.protobuf) just to refuse a directory.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="bertqa_saved_model_subset.proto", package="bertqa_subset",
                                              syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str | None, bool]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, type_name, repeated in fields:
            proto.field.add(name=field_name, number=number, type=kind, type_name=type_name,
                            label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)

    message("TensorInfo", ("name", 1, field.TYPE_STRING, None, False), ("dtype", 2, field.TYPE_INT32, None, False))
    message("TensorInfoEntry", ("key", 1, field.TYPE_STRING, None, False),
            ("value", 2, field.TYPE_MESSAGE, ".bertqa_subset.TensorInfo", False))
    message("SignatureDef", ("inputs", 1, field.TYPE_MESSAGE, ".bertqa_subset.TensorInfoEntry", True),
            ("outputs", 2, field.TYPE_MESSAGE, ".bertqa_subset.TensorInfoEntry", True))
    message("SignatureEntry", ("key", 1, field.TYPE_STRING, None, False),
            ("value", 2, field.TYPE_MESSAGE, ".bertqa_subset.SignatureDef", False))
    message("MetaGraphDef", ("signature_def", 5, field.TYPE_MESSAGE, ".bertqa_subset.SignatureEntry", True))
    message("SavedModel", ("saved_model_schema_version", 1, field.TYPE_INT64, None, False),
            ("meta_graphs", 2, field.TYPE_MESSAGE, ".bertqa_subset.MetaGraphDef", True))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("bertqa_subset.SavedModel"))


def saved_model_signatures(path: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """The signatures in `path`/saved_model.pb (its first MetaGraph): name -> (inputs, outputs), each
    tensor name -> dtype name. Raises ModelFileError when the file cannot be parsed."""
    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = _saved_model_subset_class()()
    try:
        saved_model.ParseFromString(_read(pb_path))
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 (DecodeError, or UnicodeDecodeError from some protobuf builds)
        raise ModelFileError(f"{pb_path}: not a readable SavedModel protocol buffer ({type(error).__name__}); "
                             f"the file is truncated or corrupt. {_EXPORT_HINT}") from error
    if not saved_model.meta_graphs:
        raise ModelFileError(f"{pb_path}: a SavedModel without any graph (empty or not a SavedModel). {_EXPORT_HINT}")

    def tensors(entries) -> dict[str, str]:
        return {entry.key: _DTYPE_NAMES.get(entry.value.dtype, f"dtype{entry.value.dtype}") for entry in entries}

    return {entry.key: (tensors(entry.value.inputs), tensors(entry.value.outputs))
            for entry in saved_model.meta_graphs[0].signature_def}


def check_saved_model(path: str, signature_name: str) -> None:
    """Checks `path` has the signature `signature_name` with the inputs and outputs bertqa calls; loads nothing."""
    signatures = saved_model_signatures(path)
    inputs, outputs = _SAVED_MODEL_SIGNATURES[signature_name]

    def describe(name: str, ins: dict[str, str], outs: dict[str, str]) -> str:
        return (f"{name}({', '.join(f'{n}: {t}' for n, t in ins.items())}) -> "
                f"({', '.join(f'{n}: {t}' for n, t in outs.items())})")

    if signatures.get(signature_name) != (inputs, outputs):
        has = "; ".join(describe(name, *sides) for name, sides in sorted(signatures.items())
                        if not name.startswith("__"))  # __saved_model_init_op: TensorFlow's own
        raise ModelFileError(
            f"{path}: not a SavedModel of the bertqa trainer: it needs the signature "
            f"{describe(signature_name, inputs, outputs)}, it has {has or 'no signatures'}. Give the SavedModel "
            "the pipeline's Trainer exports (bertqa.model.serving).")


def saved_model_load_error(path: str, error: BaseException) -> ModelFileError:
    """A ModelFileError for a SavedModel that passed check_saved_model but TensorFlow could not load."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ModelFileError(f"{path}: TensorFlow cannot load this SavedModel ({first_line}). {_EXPORT_HINT}")
