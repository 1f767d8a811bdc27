"""The Task Library's metadata in a .tflite (tensor names, the BertTokenizer unit, vocab.txt packed in).

task_library_io_problems says whether the Task Library could feed and read the file's tensors;
add_task_library_metadata writes the metadata BertQuestionAnswerer finds its tensors and its
tokenizer by; saved_model_vocab_path and packed_vocab find the vocabulary of a SavedModel and
of an exported file.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from bertqa.on_device.conversion import TASK_LIBRARY_OUTPUT_NAMES
from bertqa.on_device.runtime import signature_runner


def task_library_io_problems(tflite_model: bytes) -> list[str]:
    """Why the Task Library could not feed or read this model's tensors; empty if it can."""
    interpreter = tf.lite.Interpreter(model_content=tflite_model)
    runner = signature_runner(interpreter)
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
    runner = signature_runner(interpreter)
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
    """The vocab.txt a trainer SavedModel ships as an asset (bertqa.model.serving tracks it)."""
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


def unpack_vocab(tflite_path: str, directory: str) -> str:
    """The file's packed vocab.txt written to `directory`; its path (the tokenizer reads a file)."""
    path = os.path.join(directory, "vocab.txt")
    with open(path, "wb") as f:
        f.write(packed_vocab(tflite_path))
    return path


def local_vocab(vocab_path: str, scratch_dir: str) -> str:
    # The metadata populator reads associated files with plain open(); copy remote
    # vocabularies (gs://, ...) next to us first. The packed name stays the basename.
    if os.path.exists(vocab_path):
        return vocab_path
    local = os.path.join(scratch_dir, os.path.basename(vocab_path))
    tf.io.gfile.copy(vocab_path, local, overwrite=True)
    return local
