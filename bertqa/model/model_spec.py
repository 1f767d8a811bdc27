"""Model specs: which encoder to fine-tune and the tunables of training and windowing.

A spec is a frozen dataclass; change one with `dataclasses.replace(spec, seq_len=256)`.
The names and tunables follow TFLite Model Maker's question-answering specs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from bertqa.data.tokenization import TokenizerConfig
from bertqa.data.windowing import WindowConfig
from bertqa.model import model_cache
from bertqa.model.modeling import EncoderConfig

# The window lengths the on-device file runs, longest first (the longest is the model's seq_len).
# Chosen from the lengths real questions need with their paragraph and the time of each length
# (benchmarks/RESULTS.md): on held-out SQuAD articles the 10th, 50th and 90th percentiles are 122,
# 162 and 259 tokens, so the steps are finest around the median (160, 176, 192), where a question
# padded 16 tokens further costs about 10% more. A signature costs the file almost nothing (the
# weights and the position table are shared) but costs LiteRT's XNNPACK its own packed copy of the
# weights in memory (about 13 MB for MiniLM), and the export its own trace.
ON_DEVICE_WINDOW_LENGTHS = (384, 320, 256, 224, 192, 176, 160, 128)


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
    # The training windows' length, when shorter than seq_len (the serving and eval windows'): more
    # windows per CPU-minute, but less skill at long windows; on `make run` 128 lost 3.7 F1 at 384
    # (benchmarks/RESULTS.md, "Shorter training windows"). None: seq_len.
    train_seq_len: int | None = None
    initializer_range: float = 0.02
    trainable: bool = True
    dropout_rate: float = 0.1
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    # Layer-wise learning-rate decay (bertqa.model.optimization; ELECTRA fine-tunes with 0.8 for
    # small models, 0.9 for base); None: every layer at the same rate.
    layer_decay: float | None = None
    # The share of training windows without an answer that train (bertqa.data.windowing.kept_for_training);
    # every window with an answer does. 1.0: all, as BERT's run_squad.py.
    answerless_keep: float = 1.0
    default_training_epochs: int = 2
    default_batch_size: int = 32
    predict_batch_size: int = 32
    # A TF Hub module: a tfhub.dev handle, a local module directory, or any path
    # tensorflow_hub resolves (see bertqa.model.hub_encoder). Its vocab is assets/vocab.txt.
    hub_handle: str | None = None
    # The on-device file's signatures, one per window length (bertqa.on_device.signatures): seq_len
    # and each of these below it. Fewer lengths: less memory in LiteRT, more padding per question.
    on_device_lengths: tuple[int, ...] = ON_DEVICE_WINDOW_LENGTHS
    # A QA-tuned model training starts from instead of the encoder's weights and a new span head
    # (bertqa.model.base_model: a pushed version, a Trainer model, or a BERT checkpoint with a span
    # head); the offline counterpart of Model Maker's `mobilebert_qa_squad`. A pushed baseline to
    # warm-start from still comes first when retraining.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.answerless_keep <= 1:
            raise ValueError(f"answerless_keep is a share in (0, 1], got {self.answerless_keep}")
        if self.train_seq_len is not None and not self.query_len + 3 < self.train_seq_len <= self.seq_len:
            raise ValueError(f"train_seq_len must exceed query_len + 3 ({self.query_len + 3}) and be at most "
                             f"seq_len ({self.seq_len}), got {self.train_seq_len}")
        if any(not isinstance(n, int) or n < 4 for n in self.on_device_lengths):
            raise ValueError(f"on_device_lengths must be token counts of at least 4, got {self.on_device_lengths}")

    def window_config(self) -> WindowConfig:
        """How text is cut into windows for this spec (BertQATransform, the Model Maker API, the CLI)."""
        return WindowConfig(seq_len=self.seq_len, query_len=self.query_len, doc_stride=self.doc_stride)

    def train_window_config(self) -> WindowConfig:
        """How training text is cut into windows: window_config() at train_seq_len when that is set."""
        return dataclasses.replace(self.window_config(), seq_len=self.train_seq_len or self.seq_len)

    def tokenizer_config(self) -> TokenizerConfig:
        """This spec's tokenizer: its (or its hub module's) vocab and lower-casing."""
        return TokenizerConfig(self.resolved_vocab_path(), self.resolved_do_lower_case())

    def resolved_vocab_path(self) -> str:
        if self.vocab_path:
            return self.vocab_path
        if self.checkpoint_dir:
            return os.path.join(self.checkpoint_dir, "vocab.txt")
        if self.hub_handle:
            from bertqa.model import hub_encoder  # tensorflow_hub is needed only by hub specs

            return hub_encoder.module_vocab_path(self.hub_handle)
        raise ValueError(f"spec {self.name!r} has no vocab_path and no checkpoint_dir to take vocab.txt from")

    def resolved_do_lower_case(self) -> bool:
        """do_lower_case, except that a hub module's own `do_lower_case` variable wins when it has one.

        A module pretrained on cased text tokenized as uncased (or the reverse) loses
        most of its vocabulary to [UNK] or to the wrong pieces, so the module decides.
        """
        if not self.hub_handle or self.vocab_path:
            return self.do_lower_case
        from bertqa.model import hub_encoder

        module_value = hub_encoder.module_do_lower_case(self.hub_handle)
        if module_value is None:
            return self.do_lower_case
        if module_value != self.do_lower_case:
            logging.getLogger(__name__).warning(
                "spec %r sets do_lower_case=%s but its hub module %s says %s; using the module's value.",
                self.name, self.do_lower_case, self.hub_handle, module_value)
        return module_value


def minilm_offline() -> BertQaSpec:
    """The offline default: all-MiniLM-L6-v2 (6 layers, hidden 384) from the model cache.

    A small model with few steps learns fastest with a larger learning rate than
    BERT-base's usual 3e-5..5e-5; 1e-4 is the value tuned on the bundled sample. Two epochs, as
    Model Maker's specs: on the sample, two gave F1 63.05-64.65 on the eval split against
    57.6-60.3 for one, in about 17 min of training on 2 cores (docs/make-run.md).
    """
    return BertQaSpec(
        name="minilm_offline",
        checkpoint_dir=str(model_cache.default_model_dir()),
        learning_rate=1e-4,
        default_training_epochs=2,
        default_batch_size=32,
        predict_batch_size=64,
    )


def tiny_random() -> BertQaSpec:
    """A 2-layer, 32-wide randomly initialised encoder on the real uncased vocab: for tests.

    Its on-device file has two window lengths, 384 and 192: enough for every path that picks a
    signature, and each end-to-end test run exports in seconds rather than tracing eight
    (tests/test_tflite_signatures.py exports the default eight).
    """
    return BertQaSpec(
        name="tiny_random",
        random_encoder=EncoderConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                     max_position_embeddings=512),
        vocab_path=os.path.join(str(model_cache.default_model_dir()), "vocab.txt"),
        learning_rate=1e-3,
        default_training_epochs=1,
        default_batch_size=16,
        predict_batch_size=32,
        on_device_lengths=(384, 192),
    )


# Model Maker's TF Hub specs, with the values of its BertQAModelSpec (tensorflow/examples,
# tensorflow_examples/lite/model_maker/core/task/model_spec/text_spec.py): seq_len 384,
# query_len 64, doc_stride 128, dropout 0.1, initializer_range 0.02, predict batch 8,
# lower case; question_answer.create trains 2 epochs by default; its optimizer (the Model
# Garden's AdamWeightDecay) warms up over 10% of steps and decays weights by 0.01.
_TFHUB_MOBILEBERT = "https://tfhub.dev/google/mobilebert/uncased_L-24_H-128_B-512_A-4_F-4_OPT/1"
_TFHUB_MOBILEBERT_SQUAD = "https://tfhub.dev/google/mobilebert/uncased_L-24_H-128_B-512_A-4_F-4_OPT/squadv1/1"
_TFHUB_BERT_BASE = "https://tfhub.dev/tensorflow/bert_en_uncased_L-12_H-768_A-12/1"


def _model_maker_hub_spec(name: str, hub_handle: str, learning_rate: float, batch_size: int) -> BertQaSpec:
    return BertQaSpec(
        name=name,
        hub_handle=hub_handle,
        seq_len=384,
        query_len=64,
        doc_stride=128,
        dropout_rate=0.1,
        initializer_range=0.02,
        trainable=True,
        do_lower_case=True,
        learning_rate=learning_rate,
        warmup_fraction=0.1,
        weight_decay=0.01,
        default_training_epochs=2,
        default_batch_size=batch_size,
        predict_batch_size=8,
    )


def bert_qa() -> BertQaSpec:
    """Model Maker's bert_qa: BERT-base uncased (TF2 hub module), learning rate 8e-5, batch 16."""
    return _model_maker_hub_spec("bert_qa", _TFHUB_BERT_BASE, learning_rate=8e-5, batch_size=16)


def mobilebert_qa() -> BertQaSpec:
    """Model Maker's mobilebert_qa: MobileBERT (TF1 hub module), learning rate 4e-5, batch 32."""
    return _model_maker_hub_spec("mobilebert_qa", _TFHUB_MOBILEBERT, learning_rate=4e-5, batch_size=32)


def mobilebert_qa_squad() -> BertQaSpec:
    """Model Maker's mobilebert_qa_squad: MobileBERT already fine-tuned on SQuAD 1.1, with its own span head."""
    return _model_maker_hub_spec("mobilebert_qa_squad", _TFHUB_MOBILEBERT_SQUAD, learning_rate=4e-5, batch_size=32)


_SPECS = {"minilm_offline": minilm_offline, "tiny_random": tiny_random, "bert_qa": bert_qa,
          "mobilebert_qa": mobilebert_qa, "mobilebert_qa_squad": mobilebert_qa_squad}
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
    if "on_device_lengths" in fields:  # JSON has lists; the frozen spec keeps tuples
        fields["on_device_lengths"] = tuple(fields["on_device_lengths"])
    return BertQaSpec(**fields)


# The spec's fields a Tuner searches and the Trainer takes from its best trial (bertqa.model.tuning);
# the batch size, which is the Trainer's rather than the spec's, comes with them.
TUNABLE_FIELDS = ("learning_rate", "warmup_fraction", "dropout_rate")


def apply_hyperparameters(spec: BertQaSpec, batch_size: int, values: dict) -> tuple[BertQaSpec, int]:
    """The spec and batch size with a trial's (or the Tuner's best) values in place of theirs."""
    unknown = set(values) - set(TUNABLE_FIELDS) - {"batch_size"}
    if unknown:
        raise ValueError(f"hyperparameters {sorted(unknown)} are not settings of this trainer "
                         f"(it takes {', '.join((*TUNABLE_FIELDS, 'batch_size'))})")
    spec = dataclasses.replace(spec, **{k: float(values[k]) for k in TUNABLE_FIELDS if k in values})
    return spec, int(values.get("batch_size", batch_size))
