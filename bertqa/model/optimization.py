"""Layer-wise learning-rate decay: AdamW whose rate shrinks layer by layer from the span head down.

ELECTRA's fine-tuning recipe (Clark et al., 2020, appendix A: 0.8 for ELECTRA-small, 0.9 for base
on SQuAD): the span head trains at the full rate, the top transformer layer at `decay` times it,
the one below at decay^2, and the embeddings at decay^(layers + 1). The lower layers, which a
pretrained encoder already has closest to what any task needs, move least.

tf_keras's AdamW takes one learning rate for all variables and no optimizer in the project's
dependencies scales it per variable (Model Garden's and tensorflow-addons' are not installed, and
tensorflow-addons is end-of-life). So LayerwiseAdamW scales the rate where AdamW reads it for one
variable: in its Adam update and in its decoupled weight decay. Both read `learning_rate` once per
variable; the multiplier of that variable is set just before, and reset to 1 after, so everything
else (the schedule, the logs) sees the rate unscaled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import tf_keras as keras

# Encoder layers: modeling.BertEncoder's "encoder/layer_3/..." and TF Hub BERT encoders' "transformer/layer_3/...".
_LAYER = re.compile(r"(?:^|/)layer_(\d+)/")
_HEAD_PREFIX = "span_head/"


def layer_depth(variable_name: str, num_layers: int) -> int:
    """0 for the embeddings (anything below the first layer), i + 1 for layer i, num_layers + 1 for the head."""
    if variable_name.startswith(_HEAD_PREFIX):
        return num_layers + 1
    match = _LAYER.search(variable_name)
    return int(match.group(1)) + 1 if match else 0


def layer_multipliers(variable_names: Iterable[str], decay: float) -> dict[str, float]:
    """Each variable's share of the peak rate: decay ** (num_layers + 1 - depth)."""
    names = list(variable_names)
    layers = [int(m.group(1)) for m in map(_LAYER.search, names) if m]
    if not layers:
        raise ValueError("no encoder layer variables (…/layer_N/…) to decay the learning rate over")
    num_layers = max(layers) + 1
    return {name: decay ** (num_layers + 1 - layer_depth(name, num_layers)) for name in names}


class LayerwiseAdamW(keras.optimizers.AdamW):
    """keras.optimizers.AdamW with each variable's rate (and weight decay) scaled by its multiplier."""

    def __init__(self, multipliers: dict[str, float], **kwargs):
        self._multipliers = dict(multipliers)
        self._multiplier = 1.0
        super().__init__(**kwargs)

    @property
    def learning_rate(self):
        rate = keras.optimizers.AdamW.learning_rate.fget(self)
        return rate if self._multiplier == 1.0 else rate * self._multiplier

    @learning_rate.setter
    def learning_rate(self, value):
        keras.optimizers.AdamW.learning_rate.fset(self, value)

    def _multiplier_of(self, variable) -> float:
        return self._multipliers.get(variable.name, 1.0)

    def update_step(self, gradient, variable):
        self._multiplier = self._multiplier_of(variable)
        try:
            super().update_step(gradient, variable)
        finally:
            self._multiplier = 1.0

    def _use_weight_decay(self, variable):
        # Called for each variable right before its decay reads learning_rate (both the
        # single-device and the distributed _apply_weight_decay); _apply_weight_decay resets it.
        self._multiplier = self._multiplier_of(variable)
        return super()._use_weight_decay(variable)

    def _apply_weight_decay(self, variables):
        try:
            super()._apply_weight_decay(variables)
        finally:
            self._multiplier = 1.0

    def get_config(self):
        return {**super().get_config(), "multipliers": self._multipliers}


def make_optimizer(learning_rate, weight_decay: float, layer_decay: float | None = None,
                   variable_names: Iterable[str] = ()) -> keras.optimizers.Optimizer:
    """BERT's AdamW (betas 0.9 / 0.999, epsilon 1e-6); with `layer_decay`, its layer-wise form over these variables."""
    settings = dict(learning_rate=learning_rate, weight_decay=weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-6)
    if layer_decay is not None and layer_decay != 1.0:
        optimizer = LayerwiseAdamW(layer_multipliers(variable_names, layer_decay), **settings)
    else:
        optimizer = keras.optimizers.AdamW(**settings)
    # BERT does not decay LayerNorm parameters or biases.
    optimizer.exclude_from_weight_decay(var_names=["norm", "bias"])
    return optimizer
