"""Writes a span model as a Hugging Face BertForQuestionAnswering checkpoint directory (config.json,
model.safetensors with bert.* and qa_outputs.*, vocab.txt): the layout users download
SQuAD-tuned checkpoints in, for the --init-from tests. The inverse of
bertqa.model.checkpoint.load_encoder_weights, plus the span head."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
from safetensors.numpy import save_file

from bertqa.model.modeling import BertEncoder


def write_bert_qa_checkpoint(model, directory: pathlib.Path, vocab_path: str, **config_overrides) -> pathlib.Path:
    (encoder,) = [layer for layer in model.layers if isinstance(layer, BertEncoder)]
    config = encoder.config
    tensors = {}

    def dense(prefix, layer):  # Keras kernel (in, out) -> PyTorch Linear weight (out, in)
        kernel, bias = layer.get_weights()
        tensors[f"bert.{prefix}.weight"], tensors[f"bert.{prefix}.bias"] = kernel.T, bias

    def norm(prefix, layer):
        tensors[f"bert.{prefix}.weight"], tensors[f"bert.{prefix}.bias"] = layer.get_weights()

    tensors["bert.embeddings.word_embeddings.weight"] = encoder.word_embeddings.get_weights()[0]
    tensors["bert.embeddings.position_embeddings.weight"] = encoder.position_embeddings.get_weights()[0]
    tensors["bert.embeddings.token_type_embeddings.weight"] = encoder.type_embeddings.get_weights()[0]
    norm("embeddings.LayerNorm", encoder.embedding_norm)
    for i, block in enumerate(encoder.blocks):
        p = f"encoder.layer.{i}"
        dense(f"{p}.attention.self.query", block.attention.query)
        dense(f"{p}.attention.self.key", block.attention.key)
        dense(f"{p}.attention.self.value", block.attention.value)
        dense(f"{p}.attention.output.dense", block.attention.output_dense)
        norm(f"{p}.attention.output.LayerNorm", block.attention_norm)
        dense(f"{p}.intermediate.dense", block.intermediate)
        dense(f"{p}.output.dense", block.output_dense)
        norm(f"{p}.output.LayerNorm", block.output_norm)
    kernel, bias = model.get_layer("span_head").dense.get_weights()
    tensors["qa_outputs.weight"], tensors["qa_outputs.bias"] = kernel.T, bias
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: np.ascontiguousarray(value) for name, value in tensors.items()},
              str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["BertForQuestionAnswering"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size, "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads, "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps, **config_overrides}))
    shutil.copy(vocab_path, directory / "vocab.txt")
    return directory
