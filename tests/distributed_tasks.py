"""What tests/test_distributed_training.py runs in processes of their own (TensorFlow fixes its
devices and collective runtime at its first op, so each layout needs a fresh process).

    python tests/distributed_tasks.py mirrored WINDOW_FILE STEPS OUT_DIR
        trains the tiny spec for STEPS steps on the default strategy and on MirroredStrategy over
        two logical CPU devices, from the same initial weights, and writes both weights (.npz)
        and what else the test checks (result.json) to OUT_DIR.
    python tests/distributed_tasks.py run_fn FN_ARGS_JSON
        calls the Trainer's run_fn with those FnArgs fields, as one replica of a Vertex AI job
        does (TF_CONFIG comes from the environment).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_spec(dropout_rate: float):
    from bertqa.model import model_spec

    return dataclasses.replace(model_spec.get("tiny_random"), dropout_rate=dropout_rate)


def mirrored(window_file: str, steps: int, out_dir: str) -> None:
    from bertqa.model import distribution

    strategy = distribution.strategy_for_environment(local_devices=2)  # before any other op
    import numpy as np
    import tensorflow as tf

    from bertqa.model import training

    # float32 matmuls: bfloat16 rounding of half batches would differ from the whole batch's.
    config = training.TrainConfig(batch_size=8, train_steps=steps, learning_rate=1e-3, shuffle_buffer=100,
                                  matmul_dtype="float32")
    initial = None
    result = {"replicas": strategy.num_replicas_in_sync,
              "devices": [d.name for d in tf.config.list_logical_devices("CPU")]}
    for name, chosen in (("default", tf.distribute.get_strategy()), ("mirrored", strategy)):
        with chosen.scope():
            model = training.build_model(_tiny_spec(0.0))
        if initial is None:
            initial = model.get_weights()
        model.set_weights(initial)
        history = training.train(model, [window_file], config, strategy=chosen)
        np.savez(os.path.join(out_dir, f"{name}.npz"), *model.get_weights())
        result[name] = {"loss": history.history["loss"][-1], "replicas": history.replicas,
                        "iterations": int(model.optimizer.iterations.numpy())}

    # With dropout: the counter advances once per model call on every replica alike, and the
    # two replicas draw different masks (each trains on its own slice).
    with strategy.scope():
        model = training.build_model(_tiny_spec(0.5))
    training.train(model, [window_file], dataclasses.replace(config, train_steps=3), strategy=strategy)
    seeds = model.get_layer("encoder").dropout_seeds
    result["dropout_step_per_replica"] = [int(v) for v in strategy.experimental_local_results(seeds.step)]
    dropout = model.get_layer("encoder").dropout
    ones = tf.ones([4, 64])

    @tf.function
    def masks():
        return strategy.run(lambda: dropout(ones, training=True))

    per_replica = [t.numpy() for t in strategy.experimental_local_results(masks())]
    result["dropout_masks_differ"] = bool((per_replica[0] != per_replica[1]).any())
    # Model Maker's spec attributes: distribution_strategy="mirrored" with num_gpus=2 trains
    # under MirroredStrategy over the two (logical) devices.
    from bertqa.model_maker import model_spec as mm_spec
    from bertqa.model_maker import question_answer

    spec = mm_spec.get("tiny_random", distribution_strategy="mirrored", num_gpus=2)
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    train_data = question_answer.DataLoader.from_squad(os.path.join(fixtures, "tiny_train.json"), spec,
                                                       is_training=True)
    made = question_answer.create(train_data, model_spec=spec, epochs=1, batch_size=4)
    # What the training ran under, not what the spec would make: Keras's fit runs its steps
    # under the strategy the model was built in, training.train records the one it fitted
    # under, and each variable of a model built under MirroredStrategy has a copy per replica.
    result["model_maker_replicas"] = {
        "model": made.model.distribute_strategy.num_replicas_in_sync,
        "fit": made.model.history.replicas,
        "variable_copies": len(made.model.trainable_variables[0].values)
        if hasattr(made.model.trainable_variables[0], "values") else 1}
    result["model_maker_iterations"] = int(made.model.optimizer.iterations.numpy())
    result["model_maker_steps_expected"] = -(-train_data.size // 4)
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)


def run_fn(fn_args_json: str) -> None:
    import logging

    from tfx.components.trainer.fn_args_utils import FnArgs

    # As TFX's executor process logs: run_fn's own lines (the wait for the chief's export) show.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from components.trainer import module

    module.run_fn(FnArgs(**json.loads(fn_args_json)))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "mirrored":
        mirrored(args[0], int(args[1]), args[2])
    elif command == "run_fn":
        run_fn(args[0])
    else:
        sys.exit(f"unknown command {command!r}")
