"""Model specs: which encoder to fine-tune and the tunables of training and windowing.

A spec is a frozen dataclass; change one with `dataclasses.replace(spec, seq_len=256)`.
The names and tunables follow TFLite Model Maker's question-answering specs.
"""

from __future__ import annotations

import dataclasses
import json
import os

from bertqa import model_cache
from bertqa.modeling import EncoderConfig


@dataclasses.dataclass(frozen=True)
class BertQaSpec:
    name: str
    # Exactly one source of encoder weights: a BERT-layout checkpoint directory, or a
    # randomly initialised encoder of `random_encoder` size (tests), or a TF Hub handle.
    checkpoint_dir: str | None = None
    random_encoder: EncoderConfig | None = None
    vocab_path: str | None = None  # defaults to <checkpoint_dir>/vocab.txt
    do_lower_case: bool = True
    seq_len: int = 384
    query_len: int = 64
    doc_stride: int = 128
    initializer_range: float = 0.02
    trainable: bool = True
    dropout_rate: float = 0.1
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    default_training_epochs: int = 2
    default_batch_size: int = 32
    predict_batch_size: int = 32

    def resolved_vocab_path(self) -> str:
        if self.vocab_path:
            return self.vocab_path
        if self.checkpoint_dir:
            return os.path.join(self.checkpoint_dir, "vocab.txt")
        raise ValueError(f"spec {self.name!r} has no vocab_path and no checkpoint_dir to take vocab.txt from")


def minilm_offline() -> BertQaSpec:
    """The offline default: all-MiniLM-L6-v2 (6 layers, hidden 384) from the model cache.

    A small model with few steps learns fastest with a larger learning rate than
    BERT-base's usual 3e-5..5e-5; 1e-4 is the value tuned on the bundled sample.
    """
    return BertQaSpec(
        name="minilm_offline",
        checkpoint_dir=str(model_cache.default_model_dir()),
        learning_rate=1e-4,
        default_training_epochs=1,
        default_batch_size=32,
        predict_batch_size=64,
    )


def tiny_random() -> BertQaSpec:
    """A 2-layer, 32-wide randomly initialised encoder on the real uncased vocab: for tests."""
    return BertQaSpec(
        name="tiny_random",
        random_encoder=EncoderConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                     max_position_embeddings=512),
        vocab_path=os.path.join(str(model_cache.default_model_dir()), "vocab.txt"),
        learning_rate=1e-3,
        default_training_epochs=1,
        default_batch_size=16,
        predict_batch_size=32,
    )


_SPECS = {"minilm_offline": minilm_offline, "tiny_random": tiny_random}
DEFAULT_SPEC = "minilm_offline"


def spec_names() -> list[str]:
    return sorted(_SPECS)


def get(name: str, **overrides) -> BertQaSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown model spec {name!r}; known specs: {', '.join(spec_names())}")
    return dataclasses.replace(_SPECS[name](), **overrides)


def to_json(spec: BertQaSpec) -> str:
    """A spec as JSON: how it travels to components as an execution property."""
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


def from_json(text: str) -> BertQaSpec:
    fields = json.loads(text)
    if fields.get("random_encoder") is not None:
        fields["random_encoder"] = EncoderConfig(**fields["random_encoder"])
    return BertQaSpec(**fields)
