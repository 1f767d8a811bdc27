"""Model Maker's QuestionAnswerDataLoader: a SQuAD file as windows, on disk for training and in memory for scoring.

`from_squad` runs the pipeline's own steps (squad_io.read_squad_file, then
windowing.make_windows with the spec's tokenizer and window settings) and writes the
windows as GZIP TFRecords (windowing.window_to_tf_example), the files
training.bucketed_window_dataset reads. The examples and windows stay in memory for
evaluation. `size` counts windows, as Model Maker's did (its "features").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence

import tensorflow as tf

from bertqa.data import squad_io, windowing
from bertqa.data.raw_example import SquadExample
from bertqa.data.tokenization import TokenizerConfig, cached_tokenizer
from bertqa.model_maker import model_spec as mm_spec

_log = logging.getLogger(__name__)


class DataLoader:
    """Windows of one SQuAD file, made for one spec's tokenizer and window settings."""

    def __init__(self, *, spec, squad_file: str, examples: Sequence[SquadExample], windows: Sequence[windowing.Window],
                 record_file: str, window_config: windowing.WindowConfig, tokenizer_config: TokenizerConfig,
                 version_2_with_negative: bool, is_training: bool, report: squad_io.DataReport):
        self.spec = spec  # the frozen bertqa.model.model_spec.BertQaSpec the windows were made for
        self.squad_file = squad_file
        self.examples = list(examples)
        self.windows = list(windows)
        self.record_file = record_file
        self.window_config = window_config
        self.tokenizer_config = tokenizer_config
        self.version_2_with_negative = version_2_with_negative
        self.is_training = is_training
        self.report = report

    @property
    def size(self) -> int:
        """The number of windows (Model Maker's features), which is what an epoch goes through."""
        return len(self.windows)

    @property
    def features(self) -> list[windowing.Window]:
        """Model Maker's name for the windows."""
        return self.windows

    def __len__(self) -> int:
        return self.size

    @classmethod
    def from_squad(cls, filename: str, model_spec, is_training: bool = True, version_2_with_negative: bool = False,
                   cache_dir: str | None = None) -> DataLoader:
        """Reads, windows and writes out a SQuAD file for `model_spec` (a name or a spec).

        cache_dir: where the window TFRecords go; a new temporary directory when None.
        """
        spec = mm_spec.get(model_spec).to_spec()
        window_config = spec.train_window_config() if is_training else spec.window_config()
        tokenizer_config = spec.tokenizer_config()
        examples, report = squad_io.read_squad_file(
            filename, squad_io.SquadReadConfig(version_2_with_negative=version_2_with_negative))
        windows, window_report = windowing.make_windows(
            examples, cached_tokenizer(tokenizer_config), window_config, is_training)
        if window_report.answer_outside_all_windows:
            _log.warning("%d training answers lie in no window of %d tokens and train as 'no answer' (first: %s).",
                         len(window_report.answer_outside_all_windows), window_config.seq_len,
                         window_report.answer_outside_all_windows[0])
        record_file = _record_path(cache_dir or tempfile.mkdtemp(prefix="bertqa_data_"), filename,
                                   window_config, tokenizer_config, version_2_with_negative, is_training)
        _write_windows(windows, record_file)
        _log.info("%s: %d questions -> %d windows in %s", filename, len(examples), len(windows), record_file)
        return cls(spec=spec, squad_file=filename, examples=examples, windows=windows, record_file=record_file,
                   window_config=window_config, tokenizer_config=tokenizer_config,
                   version_2_with_negative=version_2_with_negative, is_training=is_training, report=report)


def _record_path(cache_dir: str, filename: str, window_config: windowing.WindowConfig,
                 tokenizer_config: TokenizerConfig, version_2_with_negative: bool, is_training: bool) -> str:
    # Named by everything the windows depend on, so one cache_dir can hold several specs' data.
    settings = json.dumps([os.path.abspath(filename), dataclasses.asdict(window_config),
                           dataclasses.asdict(tokenizer_config), version_2_with_negative, is_training])
    digest = hashlib.sha1(settings.encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(filename))[0]
    split = "train" if is_training else "eval"
    return os.path.join(cache_dir, f"{stem}_{split}_{digest}.tfrecord.gz")


def _write_windows(windows: Sequence[windowing.Window], path: str) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for window in windows:
            writer.write(windowing.window_to_tf_example(window).SerializeToString())
