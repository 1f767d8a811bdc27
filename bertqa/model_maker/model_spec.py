"""Model Maker's mutable model specs (`spec.seq_len = 512`) over the project's frozen BertQaSpec.

`get(name)` returns a `QaModelSpec`: plain attributes for Model Maker's tunables that
anyone may change until the spec is used; `to_spec()` turns the current values into
the frozen `bertqa.model.model_spec.BertQaSpec` that DataLoader and create() hand to the core.
`uri` is Model Maker's name for the TF Hub handle.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings

from bertqa.model import model_spec as core_specs

# Model Maker's tunables that map one-to-one onto BertQaSpec fields.
TUNABLES = (
    "seq_len",
    "query_len",
    "doc_stride",
    "initializer_range",
    "trainable",
    "dropout_rate",
    "learning_rate",
    "predict_batch_size",
    "default_training_epochs",
    "default_batch_size",
    "do_lower_case",
    # Not Model Maker's: a QA-tuned base to start from (bertqa.operations.base_model), the offline
    # counterpart of picking mobilebert_qa_squad: model_spec.get("minilm_offline", init_from=PATH).
    "init_from",
    # Nor this: the training windows' length when shorter than seq_len (BertQaSpec.train_seq_len).
    "train_seq_len",
    # Nor these, the runners' --warmup-fraction, --layer-decay and --answerless-keep, so that a recipe
    # measured with a runner can be trained through this API too.
    "warmup_fraction",
    "layer_decay",
    "answerless_keep",
)
# Accepted so that Model Maker code runs, but they mean nothing here (see _IGNORED_WHY).
_IGNORED_WHY = {
    "tpu": "TPU training is not supported; training runs on this machine's CPU or GPU",
    "is_tf2": "the hub module's format is read from the module itself",
    "init_from_squad_model": "a module with a SQuAD head ('squad' signature) is always used whole",
    "tflite_input_name": "the TFLite tensors always get the names the Task Library expects",
    "tflite_output_name": "the TFLite tensors always get the names the Task Library expects",
}
_OWN_ATTRIBUTES = {"name", "uri", "model_dir", "_base", "distribution_strategy", "num_gpus", "_strategy",
                   *TUNABLES}
# Model Maker's distribution_strategy values (Model Garden's distribute_utils names), and what
# they mean here (bertqa.model.distribution). "tpu" stays refused above.
DISTRIBUTION_STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored")


class QaModelSpec:
    """A Model Maker question-answering spec whose attributes may be changed until it is used.

    model_dir: where the model's working files go (the SavedModel the TFLite export is
    converted from); a new temporary directory when None, as in Model Maker.
    """

    def __init__(self, base: core_specs.BertQaSpec, model_dir: str | None = None, tpu: str = "",
                 distribution_strategy: str = "off", num_gpus: int = 0, **overrides):
        self._strategy = None
        self._base = base
        self.name = base.name
        self.uri = base.hub_handle
        for tunable in TUNABLES:
            setattr(self, tunable, getattr(base, tunable))
        self.model_dir = model_dir
        self.tpu = tpu
        self.distribution_strategy, self.num_gpus = distribution_strategy, num_gpus
        for attribute, value in overrides.items():
            setattr(self, attribute, value)
        if self.distribution_strategy == "multi_worker_mirrored":
            # As Model Maker's spec did: made with the spec, before the data's TensorFlow ops,
            # since a multi-worker strategy must set up the runtime before any op runs.
            self.strategy()

    def strategy(self):
        """The tf.distribute strategy training runs under (made once; see bertqa.model.distribution).

        off / one_device: TensorFlow's default strategy. mirrored: MirroredStrategy over
        num_gpus devices (logical CPU devices when there are fewer GPUs; then the spec must be
        made before TensorFlow runs anything), or over every GPU with num_gpus 0.
        multi_worker_mirrored: MultiWorkerMirroredStrategy over the TF_CONFIG cluster.
        """
        if self._strategy is None:
            from bertqa.model import distribution

            if self.distribution_strategy not in DISTRIBUTION_STRATEGIES:
                raise ValueError(f"distribution_strategy {self.distribution_strategy!r} is not one of "
                                 f"{', '.join(DISTRIBUTION_STRATEGIES)}")
            if self.distribution_strategy == "multi_worker_mirrored":
                if distribution.cluster_role() is None:
                    raise ValueError("distribution_strategy='multi_worker_mirrored' needs a TF_CONFIG naming "
                                     "several chief/worker tasks in the environment of every worker")
                self._strategy = distribution.strategy_for_environment()
            elif self.distribution_strategy == "mirrored":
                try:
                    self._strategy = distribution.strategy_for_environment(local_devices=self.num_gpus or None)
                except RuntimeError as error:  # TensorFlow's devices were set up before the split
                    raise RuntimeError(f"distribution_strategy='mirrored', num_gpus={self.num_gpus}: this machine "
                                       f"has fewer GPUs, and logical CPU devices can be made only before "
                                       f"TensorFlow's first op: make the spec first ({error})") from None
            else:
                import tensorflow as tf

                self._strategy = tf.distribute.get_strategy()
        return self._strategy

    def __setattr__(self, attribute: str, value) -> None:
        if attribute in _IGNORED_WHY and value:
            warnings.warn(f"{attribute}={value!r} is not supported and has no effect: {_IGNORED_WHY[attribute]}.",
                          UserWarning, stacklevel=2)
        elif attribute not in _OWN_ATTRIBUTES and attribute not in _IGNORED_WHY:
            # Model Maker specs take any attribute; a misspelt tunable should not vanish silently.
            warnings.warn(f"{attribute!r} is not a tunable of this spec and has no effect; the tunables are "
                          f"{', '.join(TUNABLES)}, uri, model_dir.", UserWarning, stacklevel=2)
        super().__setattr__(attribute, value)

    def to_spec(self) -> core_specs.BertQaSpec:
        """The frozen project spec for the attributes' current values."""
        overrides = {tunable: getattr(self, tunable) for tunable in TUNABLES}
        if self.uri != self._base.hub_handle:
            # A new handle replaces whatever encoder the named spec had, and its vocab.
            overrides.update(hub_handle=self.uri, checkpoint_dir=None, random_encoder=None, vocab_path=None)
        return dataclasses.replace(self._base, **overrides)

    def working_dir(self) -> str:
        if not self.model_dir:
            self.model_dir = tempfile.mkdtemp(prefix="bertqa_model_maker_")
        return self.model_dir

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in ("name", "uri", *TUNABLES))
        return f"QaModelSpec({values})"


def get(spec_or_name: str | QaModelSpec | core_specs.BertQaSpec, **attributes) -> QaModelSpec:
    """Model Maker's model_spec.get: a new spec by name, or the spec itself when given one.

    Names: mobilebert_qa, mobilebert_qa_squad, bert_qa (TF Hub modules, as in Model Maker),
    minilm_offline (the offline default) and tiny_random (tests).
    """
    if isinstance(spec_or_name, QaModelSpec):
        for attribute, value in attributes.items():
            setattr(spec_or_name, attribute, value)
        return spec_or_name
    if isinstance(spec_or_name, core_specs.BertQaSpec):
        return QaModelSpec(spec_or_name, **attributes)
    if isinstance(spec_or_name, str):
        return QaModelSpec(core_specs.get(spec_or_name), **attributes)
    raise TypeError(f"expected a spec name ({', '.join(core_specs.spec_names())}) or a spec, "
                    f"got {type(spec_or_name).__name__}")


# Model Maker's spec classes by their exported names (question_answer.BertQaSpec(...), ...).
def BertQaSpec(**attributes) -> QaModelSpec:  # noqa: N802 (Model Maker's name)
    return get("bert_qa", **attributes)


def MobileBertQaSpec(**attributes) -> QaModelSpec:  # noqa: N802
    return get("mobilebert_qa", **attributes)


def MobileBertQaSquadSpec(**attributes) -> QaModelSpec:  # noqa: N802
    return get("mobilebert_qa_squad", **attributes)
