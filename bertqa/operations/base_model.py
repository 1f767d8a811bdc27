"""A QA-tuned starting point for training (the spec's `init_from`, `--init-from PATH`).

TFLite Model Maker's tutorial fine-tunes `mobilebert_qa_squad`, a model already tuned on SQuAD,
on the user's questions; this is the same for any model that already answers questions. PATH is

- a pushed version (`serving/<version>/`, with model_record.json): the SavedModel it came from;
- a Trainer model of an earlier run (a directory with `Format-Serving/saved_model.pb`, or that
  SavedModel directory itself);
- a BERT checkpoint in the Hugging Face layout with a span head (`BertForQuestionAnswering`:
  config.json, model.safetensors with `qa_outputs.weight` and `qa_outputs.bias`, vocab.txt),
  the form in which SQuAD-tuned BERT-family checkpoints are downloaded.

The encoder and the span head start from it. A base with another vocabulary, casing or
architecture than the spec's is refused with one line naming what differs (`BaseModelError`),
before anything trains.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from bertqa.model import checkpoint, model_spec
from bertqa.model.checkpoint import CheckpointError
from bertqa.model.modeling import BertEncoder, EncoderConfig
from bertqa.operations import pushed_models

PUSHED_VERSION = "pushed version"
TRAINER_MODEL = "Trainer model"
BERT_CHECKPOINT = "BERT checkpoint with a span head"
SPAN_HEAD_KEYS = ("qa_outputs.weight", "qa_outputs.bias")
# What must match between the spec's encoder and a checkpoint's config.json.
_ARCHITECTURE_FIELDS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                        "max_position_embeddings", "type_vocab_size")
_LAYOUTS = ("a pushed version (serving/<version>/ with model_record.json), a Trainer model (with "
            "Format-Serving/saved_model.pb), or a BERT checkpoint with a span head (config.json, "
            "model.safetensors with qa_outputs.weight/bias, vocab.txt)")


class BaseModelError(CheckpointError):
    """A base that cannot start this model: one line naming the path, what differs and what to do."""


@dataclasses.dataclass(frozen=True)
class BaseModel:
    path: str
    kind: str  # PUSHED_VERSION, TRAINER_MODEL or BERT_CHECKPOINT
    saved_model_dir: str | None = None  # the SavedModel to copy weights from (not for checkpoints)
    identity: dict | None = None  # bertqa.operations.pushed_models.model_identity of the base, when recorded

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind}


def _json(path: str) -> dict:
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def locate(path: str) -> BaseModel:
    """What `path` holds, or BaseModelError when it is none of the layouts a base can have."""
    root = path.rstrip("/")
    join = os.path.join
    if tf.io.gfile.exists(join(root, "model_record.json")):
        record = _json(join(root, "model_record.json"))
        return BaseModel(path, PUSHED_VERSION, record.get("saved_model_dir"), record.get("identity"))
    for model_dir, saved_model in ((root, join(root, "Format-Serving")), (os.path.dirname(root), root)):
        if tf.io.gfile.exists(join(saved_model, "saved_model.pb")):
            summary = join(model_dir, "training_summary.json")
            identity = _json(summary).get("identity") if tf.io.gfile.exists(summary) else None
            return BaseModel(path, TRAINER_MODEL, saved_model, identity)
    if tf.io.gfile.exists(join(root, "config.json")) and tf.io.gfile.exists(join(root, "model.safetensors")):
        from safetensors import safe_open

        with safe_open(join(root, "model.safetensors"), "np") as weights:
            keys = set(weights.keys())
        missing = [key for key in SPAN_HEAD_KEYS if key not in keys]
        if missing:
            raise BaseModelError(
                f"--init-from {path}: this BERT checkpoint has no span head ({', '.join(missing)} missing): it is "
                "an encoder, not a question-answering model; give a BertForQuestionAnswering checkpoint, or use "
                "the encoder as a spec's checkpoint_dir")
        return BaseModel(path, BERT_CHECKPOINT)
    raise BaseModelError(f"--init-from {path}: not a model to start from; give {_LAYOUTS}")


def mismatch(base: BaseModel, identity: dict, encoder: EncoderConfig | None) -> str | None:
    """What differs between the base and the model a spec builds (its identity, its encoder
    config; None for a TF Hub encoder), or None when the base can start it."""
    if base.kind != BERT_CHECKPOINT:
        if base.identity is None:
            return "it records no model identity (vocabulary, casing, architecture) to check against"
        return pushed_models.comparability_problem(identity, base.identity)
    if encoder is None:
        return "the spec's encoder is a TF Hub module, which takes no BERT checkpoint's weights"
    differences = []
    vocab = os.path.join(base.path, "vocab.txt")
    if not tf.io.gfile.exists(vocab):
        differences.append("no vocab.txt beside the checkpoint")
    elif pushed_models.file_sha256(vocab) != identity.get("vocab_sha256"):
        differences.append("another vocabulary (vocab.txt differs)")
    tokenizer_config = os.path.join(base.path, "tokenizer_config.json")
    if tf.io.gfile.exists(tokenizer_config):
        lower = _json(tokenizer_config).get("do_lower_case")
        if lower is not None and bool(lower) != bool(identity.get("do_lower_case")):
            differences.append(f"do_lower_case {bool(lower)} in the checkpoint, {identity.get('do_lower_case')} here")
    try:
        theirs = checkpoint.read_encoder_config(base.path, encoder.dropout_rate, encoder.initializer_range)
    except (CheckpointError, KeyError) as error:
        differences.append(f"its config.json cannot be read as a BERT encoder's ({error})")
    else:
        differences += [f"{name} {getattr(theirs, name)} in the checkpoint, {getattr(encoder, name)} here"
                        for name in _ARCHITECTURE_FIELDS if getattr(theirs, name) != getattr(encoder, name)]
    return "; ".join(differences) or None


def check(base: BaseModel, identity: dict, encoder: EncoderConfig | None) -> None:
    problem = mismatch(base, identity, encoder)
    if problem is not None:
        raise BaseModelError(f"--init-from {base.path} ({base.kind}) cannot start this model: {problem}. Give a "
                             "base trained with the same spec (vocabulary, casing and encoder size)")


def initialise(model, base: BaseModel) -> None:
    """Copies the base's encoder and span head into `model` (bertqa.model.training.build_model's)."""
    from bertqa.model import training

    if base.kind != BERT_CHECKPOINT:
        problem = training.warm_start(model, base.saved_model_dir)
        if problem is not None:
            raise BaseModelError(f"--init-from {base.path}: {problem}")
        return
    (encoder,) = [layer for layer in model.layers if isinstance(layer, BertEncoder)]
    checkpoint.load_encoder_weights(encoder, base.path)
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(base.path, "model.safetensors"))
    head = model.get_layer("span_head").dense
    # PyTorch's Linear stores (out, in) = (2, hidden); the Keras kernel is (hidden, 2): start, end.
    kernel, bias = np.asarray(weights["qa_outputs.weight"]).T, np.asarray(weights["qa_outputs.bias"])
    expected = [tuple(w.shape) for w in head.get_weights()]
    if expected != [kernel.shape, bias.shape]:
        raise BaseModelError(f"--init-from {base.path}: qa_outputs has shapes {[kernel.shape, bias.shape]}, "
                             f"the span head {expected}")
    head.set_weights([kernel, bias])


def for_spec(spec: model_spec.BertQaSpec) -> BaseModel | None:
    """The spec's init_from, located and checked against the model the spec builds; None without one."""
    if not spec.init_from:
        return None
    base = locate(spec.init_from)
    identity = pushed_models.model_identity(json.loads(model_spec.to_json(spec)), spec.tokenizer_config().vocab_path)
    check(base, identity, encoder_config(spec))
    return base


def encoder_config(spec) -> EncoderConfig | None:
    """The encoder config a spec builds (None for a TF Hub encoder)."""
    if spec.hub_handle:
        return None
    if spec.checkpoint_dir:
        return checkpoint.read_encoder_config(spec.checkpoint_dir, spec.dropout_rate, spec.initializer_range)
    return dataclasses.replace(spec.random_encoder, dropout_rate=spec.dropout_rate,
                               initializer_range=spec.initializer_range)
