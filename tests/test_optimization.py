"""Layer-wise learning-rate decay (bertqa.model.optimization)."""

import numpy as np
import pytest
import tensorflow as tf

from bertqa.model import model_spec, optimization, training


@pytest.fixture(scope="module")
def tiny_names():
    model = training.build_model(model_spec.get("tiny_random"))
    return [v.name for v in model.trainable_variables]


def test_the_head_trains_at_the_peak_rate_and_each_layer_below_at_decay_times_the_one_above(tiny_names):
    multipliers = optimization.layer_multipliers(tiny_names, 0.5)  # tiny_random: 2 layers
    assert multipliers["span_head/span_logits/kernel:0"] == 1.0
    assert multipliers["encoder/layer_1/attention/query/kernel:0"] == 0.5
    assert multipliers["encoder/layer_0/output_norm/gamma:0"] == 0.25
    assert multipliers["encoder/word_embeddings/embeddings:0"] == 0.125
    assert multipliers["encoder/embedding_norm/beta:0"] == 0.125
    # A TF Hub BERT encoder's layers are named transformer/layer_N/.
    assert optimization.layer_depth("transformer/layer_11/self_attention/query/kernel:0", 12) == 12


def test_variables_without_encoder_layers_are_refused():
    with pytest.raises(ValueError, match="no encoder layer"):
        optimization.layer_multipliers(["dense/kernel:0"], 0.8)


def _one_update(optimizer, initial, gradients):
    variables = [tf.Variable(value, name=name) for name, value in initial.items()]
    optimizer.apply_gradients(zip([tf.constant(g) for g in gradients], variables, strict=True))
    return [v.numpy() - initial[name] for v, name in zip(variables, initial, strict=True)]


def test_each_variables_update_and_weight_decay_are_its_multiple_of_adamws():
    rng = np.random.default_rng(0)
    # Names as Keras gives them to variables made outside a layer scope (":0" appended).
    initial = {"encoder/layer_0/kernel": rng.normal(size=(3, 4)).astype("float32"),
               "encoder/layer_1/kernel": rng.normal(size=(3, 4)).astype("float32"),
               "encoder/word_embeddings/embeddings": rng.normal(size=(5, 4)).astype("float32"),
               "span_head/kernel": rng.normal(size=(4, 2)).astype("float32")}
    gradients = [rng.normal(size=value.shape).astype("float32") for value in initial.values()]
    names = [f"{name}:0" for name in initial]
    # A large weight decay, so that a decay step taken at the unscaled rate would show. (The updates are
    # about 1e-3; the tolerance is the rounding of w + update - w in float32.)
    settings = dict(learning_rate=1e-2, weight_decay=0.5)
    plain = _one_update(optimization.make_optimizer(**settings), initial, gradients)
    layerwise_optimizer = optimization.make_optimizer(**settings, layer_decay=0.5, variable_names=names)
    assert isinstance(layerwise_optimizer, optimization.LayerwiseAdamW)
    layerwise = _one_update(layerwise_optimizer, initial, gradients)
    multipliers = optimization.layer_multipliers(names, 0.5)
    assert sorted(multipliers.values()) == [0.125, 0.25, 0.5, 1.0]
    for name, mine, theirs in zip(names, layerwise, plain, strict=True):
        np.testing.assert_allclose(mine, multipliers[name] * theirs, rtol=1e-4, atol=5e-7, err_msg=name)
    # Outside an update the rate reads unscaled (the schedule, the logs).
    assert float(layerwise_optimizer.learning_rate) == pytest.approx(1e-2)


def test_a_spec_with_layer_decay_trains_with_the_layerwise_optimizer(tmp_path):
    from test_training import _window  # noqa: PLC0415 (the windows test_training writes)

    from bertqa.data.windowing import window_to_tf_example

    path = str(tmp_path / "windows.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(16):
            writer.write(window_to_tf_example(_window(12 + i, start=i % 10 + 1)).SerializeToString())
    spec = model_spec.get("tiny_random", layer_decay=0.8)
    model = training.build_model(spec)
    config = training.train_config(spec, batch_size=4, train_steps=3)
    assert config.layer_decay == 0.8
    history = training.train(model, [path], config)
    assert isinstance(model.optimizer, optimization.LayerwiseAdamW)
    assert int(model.optimizer.iterations.numpy()) == 3 and np.isfinite(history.history["loss"][-1])
