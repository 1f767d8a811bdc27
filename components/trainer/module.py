"""run_fn for TFX's Trainer: fine-tune the spec's encoder with a span head on the window examples.

Artifacts in (through Trainer): examples = BertQATransform's transformed_examples
(window records; `train` split for training), transform_graph = the tokenizer artifact.
Artifacts out: model, a SavedModel (see bertqa.serving for its two signatures), at
fn_args.serving_model_dir.

custom_config keys: model_spec (JSON of a BertQaSpec), epochs, batch_size; Trainer's
train_args.num_steps, when set, overrides the step count from epochs.
"""

from __future__ import annotations

import json
import logging
import math
import os

import tensorflow as tf

from bertqa import model_spec, serving, training
from components.bert_qa_transform.core import read_tokenizer_artifact


def count_records(files: list[str]) -> int:
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1).numpy())


def run_fn(fn_args) -> None:
    config = fn_args.custom_config or {}
    spec = model_spec.from_json(config["model_spec"])
    batch_size = int(config.get("batch_size") or spec.default_batch_size)
    epochs = float(config.get("epochs") or spec.default_training_epochs)
    tokenizer = read_tokenizer_artifact(fn_args.transform_output)

    train_files = [f for pattern in fn_args.train_files for f in tf.io.gfile.glob(pattern)]
    num_windows = count_records(train_files)
    steps = fn_args.train_steps or max(1, math.ceil(num_windows * epochs / batch_size))
    logging.info("%d training windows, %.2f epochs, batch %d -> %d steps", num_windows, epochs, batch_size, steps)

    model = training.build_model(spec)
    train_config = training.train_config(spec, batch_size, steps)
    history = training.train(model, train_files, train_config)

    serving.export_saved_model(model, tokenizer.vocab_path, tokenizer.do_lower_case, tokenizer.window,
                               fn_args.serving_model_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training_summary.json"), "w") as f:
        json.dump({"train_windows": num_windows, "steps": steps, "batch_size": batch_size,
                   "final_loss": float(history.history["loss"][-1])}, f, indent=2)
