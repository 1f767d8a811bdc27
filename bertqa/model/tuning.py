"""Hyperparameter search for the span model with KerasTuner: the search space, the tuning split,
and a Tuner whose trials are short runs of the project's own trainer.

What is searched: the peak learning rate, the warmup fraction, the batch size and the dropout
rate, the settings of a spec that decide its optimisation (bertqa.model.model_spec). The
window length and stride are not: they decide the windows BertQATransform already wrote, so
searching them would mean a Transform per trial.

Scored on what no model is trained on and the eval split never sees: the training windows are
cut by paragraph (windows of every question on one context go to the same side), a share of
the paragraphs holds out, and each trial reports the span loss on them (`val_loss`, lower is
better). The eval split, which the pipeline blesses and pushes on, plays no part in the choice.
Why paragraphs and not articles: the window records carry no title, and the questions of one
paragraph share its text, so holding out whole paragraphs keeps a validation answer's text out
of training.

Why a Tuner of our own over KerasTuner's Oracle rather than a HyperModel: KerasTuner 1.4 builds
and checks models with the `keras` package (Keras 3 here), while the project trains with
tf_keras (Keras 2, which MultiWorkerMirroredStrategy and the TFLite converter need); overriding
run_trial, as KerasTuner documents for black-box search, trains each trial with
bertqa.model.training and returns its score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import time

import keras_tuner
import tensorflow as tf

from bertqa.data import windowing
from bertqa.model import model_spec, training

OBJECTIVE = "val_loss"


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """How much search: trials, the whole search's time, and the windows the trials train on."""
    max_trials: int = 4
    # The whole search's wall-clock budget: no trial starts after it, and each trial's training
    # has an equal share of it (bertqa.model.training's time budget: the schedule fits the share).
    budget_minutes: float = 20.0
    # Training windows the trials train on at most (a sample of the train split's paragraphs):
    # short trials rank settings; the Trainer trains on all of them.
    sample_windows: int = 4000
    validation_fraction: float = 0.2  # of the paragraphs, held out to score the trials
    epochs: float = 1.0  # over the sample, per trial (the time budget may stop a trial earlier)
    seed: int = training.DEFAULT_SEED

    def __post_init__(self):
        if self.max_trials < 1:
            raise ValueError(f"max_trials {self.max_trials}: at least one trial")
        if not self.budget_minutes > 0:
            raise ValueError(f"budget_minutes {self.budget_minutes}: a positive number of minutes")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction {self.validation_fraction}: between 0 and 1")

    @property
    def trial_seconds(self) -> float:
        return 60.0 * self.budget_minutes / self.max_trials


def search_space(spec: model_spec.BertQaSpec, batch_size: int) -> keras_tuner.HyperParameters:
    """The settings searched (model_spec.TUNABLE_FIELDS and the batch size), around the spec's own:
    its learning rate / 4 to x 4 on a log scale, and its warmup, dropout and batch size among the choices."""
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", spec.learning_rate / 4, spec.learning_rate * 4, sampling="log")
    hp.Choice("warmup_fraction", sorted({0.0, 0.1, 0.2, spec.warmup_fraction}))
    hp.Choice("batch_size", sorted({max(2, batch_size // 2), batch_size, batch_size * 2}))
    hp.Choice("dropout_rate", sorted({0.0, 0.1, spec.dropout_rate}))
    return hp


# A paragraph is known by its first context tokens in its questions' first windows. Few enough
# that every first window holds them whatever its question's length (a window keeps at least
# seq_len - query_len - 3 context tokens, or the whole paragraph): with more, two questions on
# one paragraph would see prefixes of different lengths and count as two paragraphs.
PARAGRAPH_PREFIX_TOKENS = 32


def _paragraph_key(window: windowing.Window) -> int:
    """The hash of a window's first context tokens."""
    context = [i for i, s in zip(window.input_word_ids, window.input_type_ids, strict=True) if s == 1][:-1]
    prefix = bytes(str(context[:PARAGRAPH_PREFIX_TOKENS]), "ascii")  # without the closing [SEP]
    return int(hashlib.sha256(prefix).hexdigest()[:12], 16)


@dataclasses.dataclass(frozen=True)
class TuningSplit:
    train_file: str
    validation_file: str
    train_windows: int
    validation_windows: int
    paragraphs: int  # in the sample, both sides


def write_tuning_split(window_files: list[str], out_dir: str, config: TuningConfig) -> TuningSplit:
    """Cuts the train split's windows by paragraph into the trials' training and validation files.

    A question's paragraph is the context of its first window (window_index 0); every window
    of that question goes where its paragraph goes. Paragraphs are taken in the order of a
    seeded hash, so the sample is the same on every run of the same data.
    """
    by_question: dict[str, list[bytes]] = {}
    first_context: dict[str, int] = {}
    for record in tf.data.TFRecordDataset(window_files, compression_type="GZIP").as_numpy_iterator():
        window = windowing.window_from_tf_example(record)  # parsed once
        by_question.setdefault(window.example_id, []).append(record)
        if window.window_index == 0:
            first_context[window.example_id] = _paragraph_key(window)
    paragraphs: dict[int, list[str]] = {}
    for question in by_question:
        paragraphs.setdefault(first_context.get(question, 0), []).append(question)
    if len(paragraphs) < 2:
        raise ValueError(f"the train split has {len(paragraphs)} paragraph(s): tuning holds out whole "
                         "paragraphs and needs at least two")

    def order(key: int) -> str:
        return hashlib.sha256(f"{config.seed}:{key}".encode()).hexdigest()

    ranked = sorted(paragraphs, key=order)
    held_out = max(1, round(len(ranked) * config.validation_fraction))
    sides = {"validation": ranked[:held_out], "train": ranked[held_out:]}
    limits = {"train": config.sample_windows,
              "validation": max(1, round(config.sample_windows * config.validation_fraction))}
    tf.io.gfile.makedirs(out_dir)
    counts, files = {}, {}
    for side, keys in sides.items():
        files[side] = os.path.join(out_dir, f"tuning_{side}.gz")
        written = 0
        with tf.io.TFRecordWriter(files[side], options="GZIP") as writer:
            for key in keys:
                records = [r for q in paragraphs[key] for r in by_question[q]]
                if written and written + len(records) > limits[side]:
                    break
                for record in records:
                    writer.write(record)
                written += len(records)
        counts[side] = written
    return TuningSplit(train_file=files["train"], validation_file=files["validation"],
                       train_windows=counts["train"], validation_windows=counts["validation"],
                       paragraphs=len(paragraphs))


def validation_loss(model, files: list[str], batch_size: int, seq_len: int) -> float:
    """The compiled span loss (the training objective) over every window of `files`."""
    dataset = training.bucketed_window_dataset(files, batch_size, seq_len)
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["loss"])


class BudgetedRandomSearch(keras_tuner.oracles.RandomSearchOracle):
    """Random search that starts no trial once the search's time budget is spent."""

    def __init__(self, budget_seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.budget_seconds = budget_seconds
        self.search_started: float | None = None

    def populate_space(self, trial_id):
        now = time.monotonic()
        if self.search_started is None:
            self.search_started = now
        elif now - self.search_started >= self.budget_seconds:
            logging.info("tuning: the %.0f s budget is spent after %d trials", self.budget_seconds, len(self.trials))
            return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)


class SpanModelTuner(keras_tuner.Tuner):
    """Each trial: the spec with the trial's values, trained on the split's training windows for
    config.epochs within its share of the budget, scored by the validation windows' loss."""

    def __init__(self, spec: model_spec.BertQaSpec, batch_size: int, split: TuningSplit, config: TuningConfig,
                 directory: str, matmul_dtype: str = "auto"):
        oracle = BudgetedRandomSearch(budget_seconds=60.0 * config.budget_minutes,
                                      objective=keras_tuner.Objective(OBJECTIVE, "min"),
                                      max_trials=config.max_trials, seed=config.seed,
                                      hyperparameters=search_space(spec, batch_size))
        super().__init__(oracle=oracle, directory=directory, project_name="span_model", overwrite=True)
        self.spec, self.batch_size, self.split, self.config = spec, batch_size, split, config
        self.matmul_dtype = matmul_dtype

    def run_trial(self, trial, *args, **kwargs):
        spec, batch_size = model_spec.apply_hyperparameters(self.spec, self.batch_size, trial.hyperparameters.values)
        batch_size = min(batch_size, self.split.train_windows)
        training.keras.backend.clear_session()  # the last trial's model and graphs
        training.keras.utils.set_random_seed(self.config.seed)  # every trial from the same initial weights
        model = training.build_model(spec)
        steps = max(1, math.ceil(self.split.train_windows * self.config.epochs / batch_size))
        train_config = training.train_config(spec, batch_size, steps, time_budget_seconds=self.config.trial_seconds,
                                             matmul_dtype=self.matmul_dtype)
        training.train(model, [self.split.train_file], train_config)
        loss = validation_loss(model, [self.split.validation_file], batch_size, spec.seq_len)
        logging.info("tuning trial %s: %s -> %s %.4f (%d steps)", trial.trial_id, trial.hyperparameters.values,
                     OBJECTIVE, loss, int(model.optimizer.iterations.numpy()))
        return {OBJECTIVE: loss}
