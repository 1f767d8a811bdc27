"""The tokenizer artifact BertQATransform writes and the Trainer and TFLiteExporter read.

Apart from core.py so that its readers (the Trainer's train and export processes among them) do not
import Apache Beam, which core.py's PTransform needs: about 2 seconds of every such process's start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from bertqa.data import windowing

TOKENIZER_CONFIG_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    vocab_path: str
    do_lower_case: bool
    window: windowing.WindowConfig  # the eval windows', and the serving graph's
    # The training split's windows, when they differ (a shorter seq_len); None: `window`.
    train_window: windowing.WindowConfig | None = None

    def window_for(self, is_training: bool) -> windowing.WindowConfig:
        return (self.train_window or self.window) if is_training else self.window


def write_tokenizer_artifact(config: TransformConfig, output_dir: str) -> None:
    """The tokenizer artifact: vocab.txt plus the settings the serving graph and exporter need."""
    os.makedirs(output_dir, exist_ok=True)
    shutil.copyfile(config.vocab_path, os.path.join(output_dir, VOCAB_FILE))
    with open(os.path.join(output_dir, TOKENIZER_CONFIG_FILE), "w") as f:
        json.dump({"do_lower_case": config.do_lower_case, **dataclasses.asdict(config.window)}, f, indent=2)


def read_tokenizer_artifact(artifact_dir: str) -> TransformConfig:
    with open(os.path.join(artifact_dir, TOKENIZER_CONFIG_FILE)) as f:
        settings = json.load(f)
    do_lower_case = settings.pop("do_lower_case")
    return TransformConfig(vocab_path=os.path.join(artifact_dir, VOCAB_FILE), do_lower_case=do_lower_case,
                           window=windowing.WindowConfig(**settings))
