"""Model Maker's question_answer task: create(), and the model's summary/evaluate/export/evaluate_tflite.

Each method is a thin call into the core the TFX components use:
  create -> training.build_model + training.train (on the DataLoader's window TFRecords)
  evaluate -> evaluation.evaluate on the Keras model's logits
  export -> serving.export_saved_model, then tflite_export.export_tflite from that SavedModel
  evaluate_tflite -> scoring.evaluate_tflite (runtime.TfliteQaRunner's logits, batched)
so a model made here is the model the pipeline would make from the same spec and data.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from bertqa.data import windowing
from bertqa.model import evaluation, postprocess, serving, training
from bertqa.model.modeling import INPUT_NAMES
from bertqa.model_maker import model_spec as mm_spec
from bertqa.model_maker.config import ExportFormat, QuantizationConfig, resolve_quantization
from bertqa.model_maker.data_loader import DataLoader
from bertqa.model_maker.model_spec import BertQaSpec, MobileBertQaSpec, MobileBertQaSquadSpec  # noqa: F401
from bertqa.on_device import conversion, scoring, tflite_export

_log = logging.getLogger(__name__)

__all__ = ["DataLoader", "QuestionAnswer", "create", "BertQaSpec", "MobileBertQaSpec", "MobileBertQaSquadSpec"]

_IDS = tf.TensorSpec([None, None], tf.int32)


def create(train_data: DataLoader, model_spec=None, batch_size: int | None = None, epochs: int | None = None,
           steps_per_epoch: int | None = None, shuffle: bool = False, do_train: bool = True) -> QuestionAnswer:
    """Builds the spec's model and fine-tunes it on `train_data` (Model Maker's question_answer.create).

    model_spec: a name or spec; None means the spec `train_data` was windowed for.
    batch_size / epochs: the spec's default_batch_size / default_training_epochs when None.
    steps_per_epoch: batches per epoch; ceil(train_data.size / batch_size) when None.
    shuffle: shuffle the training windows (Model Maker's default is not to).
    do_train: False builds the model (pretrained encoder, new span head) without training it.
    """
    spec = mm_spec.get(model_spec) if model_spec is not None else None
    model = QuestionAnswer(spec or _spec_of_data(train_data), shuffle=shuffle)
    if do_train:
        model.train(train_data, epochs=epochs, batch_size=batch_size, steps_per_epoch=steps_per_epoch)
    else:
        model.create_model()
    return model


def _spec_of_data(data: DataLoader) -> mm_spec.QaModelSpec:
    return mm_spec.get(data.spec)


def keras_logits_fn(model: keras.Model) -> evaluation.LogitsFn:
    """evaluation.LogitsFn for an in-memory Keras span model (one trace for every batch shape)."""

    @tf.function(input_signature=[_IDS, _IDS, _IDS])
    def logits(input_word_ids, input_mask, input_type_ids):
        outputs = model(dict(zip(INPUT_NAMES, (input_word_ids, input_mask, input_type_ids), strict=True)),
                        training=False)
        return outputs["start_logits"], outputs["end_logits"]

    def logits_fn(ids, mask, type_ids):
        start, end = logits(tf.constant(ids), tf.constant(mask), tf.constant(type_ids))
        return start.numpy(), end.numpy()

    return logits_fn


class QuestionAnswer:
    """A span model for one spec, with Model Maker's methods."""

    DEFAULT_EXPORT_FORMAT = (ExportFormat.TFLITE, ExportFormat.VOCAB)
    ALLOWED_EXPORT_FORMAT = (ExportFormat.TFLITE, ExportFormat.VOCAB, ExportFormat.SAVED_MODEL)

    def __init__(self, model_spec, shuffle: bool = False):
        self.model_spec = mm_spec.get(model_spec)
        # Frozen now: later changes to model_spec's attributes must not change what this
        # model was built for (its window shape, tokenizer) behind its back.
        self.spec = self.model_spec.to_spec()
        self.shuffle = shuffle
        self.model: keras.Model | None = None
        self._serving_dir: str | None = None  # the SavedModel TFLite files are converted from

    # --- Training -----------------------------------------------------------------------------

    def create_model(self) -> keras.Model:
        # Seeded, so the same data and settings give the same initialisation and dropout masks
        # whatever the process ran before: Keras's unseeded initialisers draw their seeds from
        # Python's random module, so TensorFlow's seed alone is not enough.
        keras.utils.set_random_seed(training.DEFAULT_SEED)
        with self.model_spec.strategy().scope():
            self.model = training.build_model(self.spec)
            if self.spec.init_from:  # the spec's QA-tuned base (model_spec.get(..., init_from=PATH))
                self._start_from_base(self.model)
        self._serving_dir = None
        return self.model

    def _start_from_base(self, model: keras.Model) -> None:
        from bertqa.operations import base_model

        base = base_model.for_spec(self.spec)
        base_model.initialise(model, base)
        _log.info("Starting from %s (%s)", base.path, base.kind)

    def train(self, train_data: DataLoader, epochs: int | None = None, batch_size: int | None = None,
              steps_per_epoch: int | None = None) -> keras.Model:
        self._check_data(train_data, "train_data", exact_windows=True)
        if not train_data.is_training:
            raise ValueError(f"{train_data.squad_file} was loaded with is_training=False: its windows carry no "
                             "answer positions. Load it with DataLoader.from_squad(..., is_training=True).")
        epochs = epochs or self.spec.default_training_epochs
        batch_size = batch_size or self.spec.default_batch_size
        if train_data.size < batch_size:
            # Model Maker refused this; a smaller batch trains the same data without surprise.
            _log.warning("train_data has %d windows, fewer than batch_size %d; using batches of %d.",
                         train_data.size, batch_size, train_data.size)
            batch_size = train_data.size
        windows = (windowing.count_training_windows([train_data.record_file], self.spec.answerless_keep)[1]
                   if self.spec.answerless_keep < 1 else train_data.size)  # those that train
        steps_per_epoch = steps_per_epoch or math.ceil(windows / batch_size)
        config = training.train_config(self.spec, batch_size, epochs * steps_per_epoch,
                                       shuffle_buffer=windows if self.shuffle else 0)
        model = self.create_model()
        _log.info("Training %s: %d epochs x %d steps of batch %d", self.spec.name, epochs, steps_per_epoch,
                  batch_size)
        training.train(model, [train_data.record_file], config, strategy=self.model_spec.strategy())
        return model

    def _check_data(self, data: DataLoader, what: str, exact_windows: bool) -> None:
        """Data tokenized or windowed otherwise than this model expects would be scored silently wrong."""
        if data.tokenizer_config != self.spec.tokenizer_config():
            raise ValueError(f"{what} was tokenized with {data.tokenizer_config}, but the model uses "
                             f"{self.spec.tokenizer_config()}. Load it again with this model's spec.")
        expected = self.spec.window_config()
        # Training data is windowed exactly as the spec trains (train_seq_len when it is set).
        trains_on = self.spec.train_window_config()
        if exact_windows and data.window_config != trains_on:
            raise ValueError(f"{what} was windowed with {data.window_config}, but the spec now says {trains_on}. "
                             "Load the data again with DataLoader.from_squad(..., model_spec) after changing the "
                             "spec.")
        if data.window_config.seq_len > expected.seq_len:
            raise ValueError(f"{what} has windows of up to {data.window_config.seq_len} tokens; the model takes "
                             f"{expected.seq_len}.")

    def _require_model(self) -> keras.Model:
        if self.model is None:
            raise ValueError("The model has not been created yet: call create() (or create_model()) first.")
        return self.model

    def summary(self) -> None:
        self._require_model().summary()

    # --- Evaluation -------------------------------------------------------------------------------

    def _eval_config(self, data: DataLoader, max_answer_length: int, null_score_diff_threshold: float,
                     ) -> evaluation.EvalConfig:
        return evaluation.EvalConfig(max_answer_length=max_answer_length,
                                     version_2_with_negative=data.version_2_with_negative,
                                     null_score_diff_threshold=null_score_diff_threshold,
                                     batch_size=self.spec.predict_batch_size)

    def evaluate(self, data: DataLoader, max_answer_length: int = 30, null_score_diff_threshold: float = 0.0,
                 verbose_logging: bool = False, output_dir: str | None = None) -> dict[str, float]:
        """SQuAD metrics on 0-100: {exact_match, f1} for v1.1 data, evaluate-v2.0.py's keys for v2.0.

        output_dir: also write predictions.json, nbest_predictions.json (and null_odds.json).
        verbose_logging: accepted for Model Maker's signature; the core logs what it skips anyway.
        """
        self._check_data(data, "data", exact_windows=False)
        config = self._eval_config(data, max_answer_length, null_score_diff_threshold)
        result = evaluation.evaluate(keras_logits_fn(self._require_model()), data.examples, data.windows, config)
        return _finish(result, data, output_dir)

    def evaluate_tflite(self, tflite_filepath: str, data: DataLoader, max_answer_length: int = 30,
                        null_score_diff_threshold: float = 0.0, verbose_logging: bool = False,
                        output_dir: str | None = None, num_threads: int | None = None) -> dict[str, float]:
        """The same metrics for an exported TFLite file, run on `data`'s windows.

        Windows run in batches on `num_threads` CPU threads (None: every CPU), not one
        at a time as in Model Maker; the metrics are the same (benchmarks/evaluate_tflite.py).
        """
        config = self._eval_config(data, max_answer_length, null_score_diff_threshold)
        result = scoring.evaluate_tflite(tflite_filepath, data.examples, data.windows, config,
                                         num_threads=num_threads)
        return _finish(result, data, output_dir)

    # --- Export -----------------------------------------------------------------------------------

    def export(self, export_dir: str, tflite_filename: str = "model.tflite", vocab_filename: str = "vocab.txt",
               saved_model_filename: str = "saved_model", export_format=None,
               quantization_config: QuantizationConfig | str | None = "default", with_metadata: bool = True,
               ) -> list[str]:
        """Writes the formats asked for (default TFLITE and VOCAB) into export_dir; returns the paths.

        quantization_config: Model Maker's convention: 'default' is dynamic-range quantization
            (its default for BERT), None the float model, else a QuantizationConfig.
        with_metadata: the TFLite file always carries the Task Library's metadata (the vocab
            included); False is accepted and ignored.
        """
        formats = _export_formats(export_format, self.ALLOWED_EXPORT_FORMAT, self.DEFAULT_EXPORT_FORMAT)
        if not with_metadata:
            _log.warning("with_metadata=False is ignored: the Task Library needs the metadata to run the model.")
        self._require_model()
        tf.io.gfile.makedirs(export_dir)
        written = []
        if ExportFormat.SAVED_MODEL in formats:
            written.append(os.path.join(export_dir, saved_model_filename))
            self._export_saved_model(written[-1])
        if ExportFormat.TFLITE in formats:
            written.append(self._export_tflite(os.path.join(export_dir, tflite_filename),
                                               resolve_quantization(quantization_config)))
        if ExportFormat.VOCAB in formats:
            written.append(os.path.join(export_dir, vocab_filename))
            tf.io.gfile.copy(self.spec.tokenizer_config().vocab_path, written[-1], overwrite=True)
        return written

    def _export_saved_model(self, path: str) -> None:
        tokenizer = self.spec.tokenizer_config()
        serving.export_saved_model(self._require_model(), tokenizer.vocab_path, tokenizer.do_lower_case,
                                   self.spec.window_config(), path, on_device_lengths=self.spec.on_device_lengths)

    def _serving_saved_model(self) -> str:
        # Every TFLite variant converts from the same SavedModel; export it once per trained model.
        if self._serving_dir is None:
            parent = self.model_spec.working_dir()
            tf.io.gfile.makedirs(parent)
            path = tempfile.mkdtemp(prefix="serving_", dir=parent)
            shutil.rmtree(path)  # tf.saved_model.save wants to create it
            self._export_saved_model(path)
            self._serving_dir = path
        return self._serving_dir

    def _export_tflite(self, path: str, quantization: QuantizationConfig | None) -> str:
        config = conversion.TfliteExportConfig(seq_len=self.spec.seq_len, query_len=self.spec.query_len,
                                               do_lower_case=self.spec.tokenizer_config().do_lower_case,
                                               window_lengths=self.spec.on_device_lengths)
        core_quantization = quantization.to_core() if quantization else conversion.QuantizationConfig.none()
        representative = quantization.representative_windows() if quantization else None
        result = tflite_export.export_tflite(self._serving_saved_model(), self.spec.tokenizer_config().vocab_path,
                                             path, config, core_quantization, representative)
        _log.info("Exported %s (%s, %d bytes)", result.path, core_quantization.name, result.size_bytes)
        return result.path


def _finish(result: evaluation.EvalResult, data: DataLoader, output_dir: str | None) -> dict[str, float]:
    if output_dir:
        postprocess.write_prediction_files(result.predictions, output_dir, data.version_2_with_negative)
    return {key: float(value) if isinstance(value, np.floating) else value for key, value in result.metrics.items()}


def _export_formats(export_format, allowed: Sequence[ExportFormat], default: Sequence[ExportFormat],
                    ) -> list[ExportFormat]:
    if export_format is None:
        return list(default)
    formats = list(export_format) if isinstance(export_format, (list, tuple, set)) else [export_format]
    for export in formats:
        if export not in allowed:
            raise ValueError(f"Export format {export} is not allowed for question answering; "
                             f"use {', '.join(f.name for f in allowed)}.")
    return formats
