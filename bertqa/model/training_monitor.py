"""The trainer's progress monitor: loss, learning rate and windows/s to TensorBoard, a bar or log lines.

Split out of training.py (which re-exports it) to keep modules short; bertqa.operations.report_data
reads the TensorBoard scalars back by the tags here.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import tensorflow as tf
import tf_keras as keras

# TensorBoard scalar names (bertqa.operations.run_report reads them back for the training curve).
LOSS_TAG, LEARNING_RATE_TAG, THROUGHPUT_TAG = "loss", "learning_rate", "windows_per_second"
TENSORBOARD_SUBDIR = "train"  # as keras.callbacks.TensorBoard lays out its logs


class TrainingMonitor(keras.callbacks.Callback):
    """Loss, learning rate and throughput of each `every`-step interval: to TensorBoard under
    `log_dir`/train (when given), to a progress bar on an interactive terminal, else to log lines.

    keras.callbacks.TensorBoard is not used: training is one epoch of N steps, its batch-level
    logs carry Keras's running mean of the epoch (not the interval's loss) and neither the
    scheduled learning rate nor windows/s. Keras reports that running mean here too, so the
    interval's loss is recovered from differences of the running sum (mean * steps).
    """

    def __init__(self, total_steps: int, batch_size: int, schedule=None, log_dir: str | None = None,
                 every: int = 20, show_bar: bool | None = None, first_step: int = 0,
                 time_budget_seconds: float | None = None):
        super().__init__()
        self.total_steps, self.batch_size, self.every = total_steps, batch_size, every
        self.schedule, self.log_dir, self.show_bar = schedule, log_dir, show_bar
        self.first_step = first_step  # > 0 when training resumes from a checkpoint
        self.time_budget_seconds = time_budget_seconds  # for the time-left estimate
        self.seconds = 0.0  # training time of this fit() call, set at its end

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self._started = self._interval_started = time.monotonic()
        self._loss_sum = self._interval_loss_sum = 0.0
        self._interval_steps = 0
        self._writer = (tf.summary.create_file_writer(os.path.join(self.log_dir, TENSORBOARD_SUBDIR))
                        if self.log_dir else None)
        # disable=None: tqdm draws only when stderr is a terminal (not under cron, CI or Kubeflow).
        self._bar = tqdm(total=self.total_steps, initial=self.first_step, desc="training", unit="step",
                         leave=False, file=sys.stderr, disable=None if self.show_bar is None else not self.show_bar)

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1
        # Keras's running mean covers the batches of this fit() call only.
        running_sum = float((logs or {}).get("loss", float("nan"))) * (batch + 1)
        self._interval_loss_sum += running_sum - self._loss_sum
        self._loss_sum = running_sum
        self._interval_steps += 1
        self._bar.update(1)
        # The last step reports too, also when a callback before this one stops training early.
        if step % self.every and step != self.total_steps and not getattr(self.model, "stop_training", False):
            return
        now = time.monotonic()
        loss = self._interval_loss_sum / self._interval_steps
        rate = self._interval_steps * self.batch_size / max(now - self._interval_started, 1e-9)
        learning_rate = float(self.schedule(step - 1)) if self.schedule is not None else float("nan")
        if self._writer is not None:
            with self._writer.as_default(step=step):
                tf.summary.scalar(LOSS_TAG, loss)
                tf.summary.scalar(LEARNING_RATE_TAG, learning_rate)
                tf.summary.scalar(THROUGHPUT_TAG, rate)
        if self._bar.disable:
            elapsed = now - self._started
            overall = (step - self.first_step) * self.batch_size / elapsed
            left = (self.total_steps - step) * self.batch_size / overall
            if self.time_budget_seconds:
                left = min(left, max(self.time_budget_seconds - elapsed, 0.0))
            logging.info("step %d/%d  loss %.3f  %.1f windows/s  %.0f s elapsed, ~%.0f s left", step,
                         self.total_steps, loss, rate, elapsed, left)
        else:
            self._bar.set_postfix(loss=f"{loss:.3f}", windows_per_s=f"{rate:.1f}", refresh=False)
        self._interval_loss_sum, self._interval_steps, self._interval_started = 0.0, 0, now

    def on_train_end(self, logs=None):
        self.seconds = time.monotonic() - self._started
        self._bar.close()
        if self._writer is not None:
            self._writer.close()
