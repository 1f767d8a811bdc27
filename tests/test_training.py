"""Length-bucketed batches and the warmup/decay schedule."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from bertqa.data import windowing
from bertqa.data.windowing import Window, window_to_tf_example
from bertqa.model import model_spec, training


def _window(length: int, start: int) -> Window:
    ids = tuple(range(1000, 1000 + length))
    return Window(unique_id=length, example_id=f"q{length}", window_index=0, input_word_ids=ids,
                  input_mask=(1,) * length, input_type_ids=(0,) * length, start_position=start,
                  end_position=start + 1, token_char_starts=(-1,) * length, token_char_ends=(-1,) * length,
                  token_is_max_context=(0,) * length)


@pytest.fixture()
def window_file(tmp_path):
    path = str(tmp_path / "windows.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for length in (10, 20, 70, 130, 140, 380):
            writer.write(window_to_tf_example(_window(length, start=length // 2)).SerializeToString())
    return path


def test_batches_are_padded_to_their_bucket_not_to_seq_len(window_file):
    dataset = training.bucketed_window_dataset(window_file, batch_size=8, seq_len=384, bucket_width=64)
    seen = {}
    for features, labels in dataset:
        width = features["input_word_ids"].shape[1]
        lengths = features["input_mask"].numpy().sum(axis=1)
        for length, start in zip(lengths, labels["start_logits"].numpy(), strict=True):
            seen[int(length)] = (width, int(start))
    # 10 and 20 share the 64 bucket; 70 -> 128; 130 and 140 -> 192; 380 -> 384 (seq_len caps 448).
    assert seen == {10: (64, 5), 20: (64, 10), 70: (128, 35), 130: (192, 65), 140: (192, 70), 380: (384, 190)}


def test_padded_positions_carry_zero_ids_and_mask(window_file):
    features, _ = next(iter(training.bucketed_window_dataset(window_file, batch_size=8, seq_len=384)))
    mask = features["input_mask"].numpy()
    ids = features["input_word_ids"].numpy()
    assert (ids[mask == 0] == 0).all()


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    schedule = training.WarmupLinearDecay(peak=1e-4, warmup_steps=10, total_steps=110)
    values = [float(schedule(step)) for step in (0, 5, 10, 60, 110)]
    np.testing.assert_allclose(values, [0.0, 5e-5, 1e-4, 5e-5, 0.0], atol=1e-9)


def _monitor_run(tmp_path, running_means, every, show_bar=False):
    schedule = training.WarmupLinearDecay(peak=1e-3, warmup_steps=2, total_steps=len(running_means))
    monitor = training.TrainingMonitor(len(running_means), batch_size=4, schedule=schedule,
                                       log_dir=str(tmp_path), every=every, show_bar=show_bar)
    monitor.on_train_begin()
    for batch, mean in enumerate(running_means):
        monitor.on_train_batch_end(batch, {"loss": mean})
    monitor.on_train_end()
    return schedule


def test_training_monitor_logs_each_interval_loss_not_keras_running_mean(tmp_path):
    from bertqa.operations import report_data

    # Batch losses 4, 2, 6, 0, 3: Keras reports their running means 4, 3, 4, 3, 3.
    schedule = _monitor_run(tmp_path, [4.0, 3.0, 4.0, 3.0, 3.0], every=2)
    curve = report_data.read_training_curve(str(tmp_path))
    assert [p.step for p in curve] == [2, 4, 5]
    np.testing.assert_allclose([p.loss for p in curve], [3.0, 3.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose([p.learning_rate for p in curve], [float(schedule(s - 1)) for s in (2, 4, 5)],
                               rtol=1e-6)
    assert all(p.windows_per_second > 0 for p in curve)


def test_training_monitor_draws_a_bar_on_a_terminal_and_logs_lines_otherwise(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    _monitor_run(tmp_path / "bar", [1.0] * 4, every=2, show_bar=True)
    assert "training" in capsys.readouterr().err
    assert not [r for r in caplog.records if "windows/s" in r.getMessage()]
    _monitor_run(tmp_path / "lines", [1.0] * 4, every=2, show_bar=False)
    assert "training:" not in capsys.readouterr().err
    assert [r.getMessage().split()[1] for r in caplog.records if "windows/s" in r.getMessage()] == ["2/4", "4/4"]


class _KilledAt(RuntimeError):
    pass


class _KillAtStep(training.keras.callbacks.Callback):
    """Stops training by an exception after `step` steps, as a SIGKILL stops a process (nothing after runs)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.step:
            raise _KilledAt(self.step)


@pytest.fixture()
def many_windows(tmp_path):
    path = str(tmp_path / "many.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(40):
            length = 12 + i % 40
            writer.write(window_to_tf_example(_window(length, start=i % 10 + 1)).SerializeToString())
    return path


@pytest.fixture()
def mostly_answerless(tmp_path):
    """2,000 windows as a long document makes them: 200 with an answer, 1,800 without ([CLS] targets)."""
    path = str(tmp_path / "long_documents.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(2000):
            window = dataclasses.replace(_window(16 + i % 30, start=3 if i % 10 == 0 else 0),
                                         unique_id=windowing.window_unique_id(f"q{i // 50}", i % 50))
            writer.write(window_to_tf_example(window).SerializeToString())
    return path


def _kept_windows(files, answerless_keep):
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").filter(
        lambda serialized: windowing.kept_for_training(serialized, answerless_keep))
    return [windowing.window_from_tf_example(record.numpy()) for record in dataset]


def test_answerless_keep_trains_every_answered_window_and_that_share_of_the_others_the_same_each_time(
        mostly_answerless):
    kept = _kept_windows([mostly_answerless], 0.1)
    answered = [w for w in kept if w.start_position > 0]
    assert len(answered) == 200
    # A share of 1,800 by a hash: 180 expected, a binomial standard deviation of 12.7.
    assert 130 < len(kept) - len(answered) < 230
    assert [w.unique_id for w in _kept_windows([mostly_answerless], 0.1)] == [w.unique_id for w in kept]
    assert windowing.count_training_windows([mostly_answerless], 0.1) == (2000, len(kept))
    assert windowing.count_training_windows([mostly_answerless]) == (2000, 2000)
    smaller = {w.unique_id for w in _kept_windows([mostly_answerless], 0.02)}
    assert smaller < {w.unique_id for w in kept}  # a smaller share keeps a subset of the same windows


def test_batches_of_a_training_with_answerless_keep_hold_only_the_kept_windows(mostly_answerless):
    kept_answerless = sum(w.start_position == 0 for w in _kept_windows([mostly_answerless], 0.1))
    starts = np.concatenate([labels["start_logits"].numpy() for _, labels in training.bucketed_window_dataset(
        mostly_answerless, 32, 384, answerless_keep=0.1)])
    assert (len(starts), int((starts == 0).sum())) == (200 + kept_answerless, kept_answerless)
    config = training.train_config(model_spec.get("tiny_random", answerless_keep=0.1), 32, 10)
    assert config.answerless_keep == 0.1
    with pytest.raises(ValueError, match="answerless_keep"):
        model_spec.get("tiny_random", answerless_keep=0.0)


def _tiny_model(initial_weights=None):
    from bertqa.model import model_spec

    # No dropout: with the same batches, an interrupted and an uninterrupted run compute the same updates.
    model = training.build_model(model_spec.get("tiny_random", dropout_rate=0.0))
    if initial_weights is not None:
        model.set_weights(initial_weights)
    return model


def test_data_order_is_seeded_so_skipping_batches_resumes_it(many_windows):
    def batches(skip=0):
        dataset = training.bucketed_window_dataset(many_windows, 4, 384, shuffle_buffer=100, repeat=True, seed=7)
        return [b[0]["input_word_ids"].numpy().tolist() for b in dataset.skip(skip).take(12 - skip)]

    full = batches()
    assert batches(skip=5) == full[5:]


class _BatchLosses(training.keras.callbacks.Callback):
    """Each step's own loss (Keras logs the epoch's running mean): with a learning rate of 0 and no
    dropout, the loss of a step tells which batch it trained on."""

    def __init__(self):
        super().__init__()
        self.means, self.losses = [], []

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.losses.append(mean * (batch + 1) - (self.means[-1] * batch if self.means else 0.0))
        self.means.append(mean)


def test_a_training_given_in_pieces_takes_the_window_order_up_where_the_last_piece_stopped(many_windows):
    # bertqa base-model's second call passes start_batch = the batches its first call took.
    initial = _tiny_model().get_weights()
    whole, piece = _BatchLosses(), _BatchLosses()
    config = training.TrainConfig(batch_size=4, train_steps=8, learning_rate=0.0, shuffle_buffer=100)
    training.train(_tiny_model(initial), [many_windows], config, callbacks=[whole])
    training.train(_tiny_model(initial), [many_windows], dataclasses.replace(config, train_steps=5, start_batch=3),
                   callbacks=[piece])
    np.testing.assert_allclose(piece.losses, whole.losses[3:], rtol=1e-4)
    assert len(set(np.round(whole.losses, 4))) > 4  # the batches differ, so the comparison tells them apart


def test_killed_training_resumes_from_its_last_checkpoint_and_ends_where_an_uninterrupted_one_does(
        many_windows, tmp_path):
    config = training.TrainConfig(batch_size=4, train_steps=9, learning_rate=1e-3, shuffle_buffer=100)
    initial = _tiny_model().get_weights()
    uninterrupted = _tiny_model(initial)
    training.train(uninterrupted, [many_windows], config)

    policy = training.CheckpointPolicy(directory=str(tmp_path / "ckpt"), every_steps=3, every_seconds=1e9)
    killed = _tiny_model(initial)
    with pytest.raises(_KilledAt):
        training.train(killed, [many_windows], config, callbacks=[_KillAtStep(5)], checkpoints=policy)
    assert tf.train.latest_checkpoint(policy.directory).endswith("-3")

    resumed = _tiny_model()  # as in a new process: other initial weights, then the checkpoint's
    history = training.train(resumed, [many_windows], config, checkpoints=policy)
    assert history.resumed_from_step == 3
    assert int(resumed.optimizer.iterations.numpy()) == config.train_steps
    for mine, theirs in zip(resumed.weights, uninterrupted.weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6, err_msg=mine.name)


def test_a_finished_training_leaves_a_final_checkpoint_that_restores_its_weights_into_a_new_model(
        many_windows, tmp_path):
    # The Trainer's export process rebuilds the model from this checkpoint (components/trainer).
    config = training.TrainConfig(batch_size=4, train_steps=5, learning_rate=1e-3, shuffle_buffer=100)
    policy = training.CheckpointPolicy(directory=str(tmp_path / "ckpt"), every_steps=3, every_seconds=1e9)
    trained = _tiny_model()
    training.train(trained, [many_windows], config, checkpoints=policy)
    assert tf.train.latest_checkpoint(policy.directory).endswith("-5")

    restored = _tiny_model()
    training.restore_weights(restored, policy.directory)
    for mine, theirs in zip(restored.weights, trained.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.name)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.restore_weights(_tiny_model(), str(tmp_path / "empty"))


def test_micro_batch_sizes_keep_windows_times_tokens_squared_within_the_budget():
    budget = 32 * 128 * 128
    for seq, expected in ((64, 32), (128, 32), (192, 11), (256, 8), (384, 3)):
        size = int(training.micro_batch_size(tf.constant(32, tf.int64), tf.constant(seq, tf.int64), budget))
        assert size == expected, seq
        assert size == 1 or size * seq * seq <= budget
    # Never zero windows, even when one window alone exceeds the budget; never more than the batch.
    assert int(training.micro_batch_size(tf.constant(5, tf.int64), tf.constant(384, tf.int64), 10)) == 1
    assert int(training.micro_batch_size(tf.constant(5, tf.int64), tf.constant(8, tf.int64), 10**9)) == 5


def test_micro_batched_steps_make_the_same_update_and_report_the_same_loss_as_whole_batches(many_windows):
    """Without dropout, cutting each batch into micro-batches changes memory, not the training."""
    initial = _tiny_model().get_weights()
    results = []
    # A budget of 20 cells: every window of these batches (12 to 51 tokens) is its own micro-batch.
    for budget in (None, 20):
        # float32 matmuls: bfloat16 rounds each micro-batch's products apart from the whole batch's.
        config = training.TrainConfig(batch_size=4, train_steps=5, learning_rate=1e-3, shuffle_buffer=100,
                                      attention_budget=budget, matmul_dtype="float32")
        model = _tiny_model(initial)
        history = training.train(model, [many_windows], config)
        results.append((model.get_weights(), history.history["loss"][-1]))
    (whole, whole_loss), (micro, micro_loss) = results
    assert micro_loss == pytest.approx(whole_loss, rel=1e-5)
    for mine, theirs in zip(micro, whole, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(micro, initial, strict=True))  # it trained at all


def test_micro_batched_gradients_are_the_whole_batch_gradients(many_windows):
    """With plain SGD the update is the gradient itself (AdamW would hide a wrongly scaled one)."""
    features, labels = next(iter(training.bucketed_window_dataset(many_windows, 4, 384)))
    initial = _tiny_model().get_weights()
    updates = []
    for budget in (None, 20):
        model = _tiny_model(initial)
        training.compile_for_training(model, training.TrainConfig(batch_size=4, train_steps=1, learning_rate=1.0,
                                                                  attention_budget=budget, matmul_dtype="float32"))
        model.optimizer = training.keras.optimizers.SGD(1.0)
        model.train_on_batch(features, labels)
        updates.append([after - before for after, before in zip(model.get_weights(), initial, strict=True)])
    for whole, micro in zip(*updates, strict=True):
        np.testing.assert_allclose(micro, whole, rtol=1e-4, atol=1e-7)
    assert any(np.abs(update).max() > 0 for update in updates[0])


def test_a_time_budget_lays_the_learning_rate_curve_over_the_budget_when_time_runs_ahead_of_steps():
    config = training.TrainConfig(batch_size=4, train_steps=1000, learning_rate=1.0, warmup_fraction=0.1,
                                  time_budget_seconds=100.0)
    elapsed = tf.Variable(0.0, dtype=tf.float64)
    budgeted, by_steps = training.learning_rate_schedule(config, elapsed), training.learning_rate_schedule(
        training.TrainConfig(batch_size=4, train_steps=1000, learning_rate=1.0, warmup_fraction=0.1))
    assert float(budgeted(50)) == pytest.approx(float(by_steps(50)))  # no time spent: steps decide
    elapsed.assign(55.0)  # 55% of the budget spent by step 50: the curve is at its 55% point
    assert float(budgeted(50)) == pytest.approx(float(by_steps(550)))
    assert float(budgeted(700)) == pytest.approx(float(by_steps(700)))  # steps ahead of time: steps decide
    elapsed.assign(100.0)
    assert float(budgeted(50)) == 0.0  # decayed to zero when the budget ends
    with pytest.raises(ValueError, match="elapsed_seconds"):
        training.learning_rate_schedule(config)


def test_a_time_budget_stops_training_before_a_step_that_would_end_past_it_and_spans_a_resume(
        many_windows, tmp_path, monkeypatch):
    # A fake clock that advances 1 s per reading: TimeBudget reads it at the start of training
    # and at each step's begin and end, so step k (from 0) ends at 2k + 2 s and lasts 1 s.
    ticks = iter(range(10**6))
    monkeypatch.setattr(training.TimeBudget, "clock", staticmethod(lambda: float(next(ticks))))
    config = training.TrainConfig(batch_size=4, train_steps=1000, learning_rate=1e-3, shuffle_buffer=100,
                                  time_budget_seconds=10.0)
    policy = training.CheckpointPolicy(directory=str(tmp_path / "ckpt"), every_steps=2, every_seconds=1e9)
    learning_rates = []
    # The optimizer's learning_rate is the rate its last update used.
    record = keras_callback(on_train_batch_end=lambda model, *_: learning_rates.append(
        float(model.optimizer.learning_rate)))
    model = _tiny_model()
    history = training.train(model, [many_windows], config, callbacks=[record], checkpoints=policy)
    # After step 4 (0-based) 10 s have passed and the next step would end at 11 s: stop at 5 steps.
    assert int(model.optimizer.iterations.numpy()) == 5
    assert history.stopped_by_time_budget and history.training_seconds == 10.0
    # The rate followed the time (step 4 began at 9 s: 90% of the way), not 5 of 1000 steps.
    assert learning_rates[-1] == pytest.approx(1e-3 * (1000 - 900) / 900)

    assert tf.train.latest_checkpoint(policy.directory).endswith("-5")  # the final weights

    # Killed after step 5 (before its final checkpoint): the checkpoint of step 4 holds 8 s spent,
    # so the run resumed from it has 2 s, room for one step.
    ticks = iter(range(10**6))
    killed_policy = dataclasses.replace(policy, directory=str(tmp_path / "killed"))
    with pytest.raises(_KilledAt):
        training.train(_tiny_model(), [many_windows], config, callbacks=[_KillAtStep(5)], checkpoints=killed_policy)
    assert tf.train.latest_checkpoint(killed_policy.directory).endswith("-4")
    ticks = iter(range(10**6))
    resumed = _tiny_model()
    history = training.train(resumed, [many_windows], config, checkpoints=killed_policy)
    assert history.resumed_from_step == 4 and history.stopped_by_time_budget
    assert int(resumed.optimizer.iterations.numpy()) == 5 and history.training_seconds == 10.0


def test_a_run_resumed_with_its_time_budget_spent_trains_no_further_step(many_windows, tmp_path, monkeypatch):
    ticks = iter(range(10**6))  # the same fake clock: step k (from 0) ends at 2k + 2 s
    monkeypatch.setattr(training.TimeBudget, "clock", staticmethod(lambda: float(next(ticks))))
    config = training.TrainConfig(batch_size=4, train_steps=1000, learning_rate=1e-3, shuffle_buffer=100,
                                  time_budget_seconds=10.0)
    # A checkpoint at step 5, written after the budget's 10 s were spent (a kill before the export).
    policy = training.CheckpointPolicy(directory=str(tmp_path / "ckpt"), every_steps=5, every_seconds=1e9)
    training.train(_tiny_model(), [many_windows], config, checkpoints=policy)
    assert tf.train.latest_checkpoint(policy.directory).endswith("-5")

    resumed = _tiny_model()
    history = training.train(resumed, [many_windows], config, checkpoints=policy)
    assert int(resumed.optimizer.iterations.numpy()) == 5
    assert history.resumed_from_step == 5 and history.stopped_by_time_budget and history.training_seconds == 10.0


def keras_callback(**methods):
    import tf_keras as keras

    callback = keras.callbacks.Callback()
    for name, method in methods.items():
        setattr(callback, name, lambda *args, _method=method, _callback=callback: _method(_callback.model, *args))
    return callback


def test_auto_matmul_dtype_is_bfloat16_only_on_cpus_with_native_bfloat16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not training.cpu_has_native_bfloat16(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert training.cpu_has_native_bfloat16(str(cpuinfo))
    assert not training.cpu_has_native_bfloat16(str(tmp_path / "absent"))  # not Linux: float32
    assert training.resolve_matmul_dtype("auto", native_bfloat16=True) == "bfloat16"
    assert training.resolve_matmul_dtype("auto", native_bfloat16=False) == "float32"
    assert training.resolve_matmul_dtype("float32", native_bfloat16=True) == "float32"
    assert training.resolve_matmul_dtype("bfloat16", native_bfloat16=False) == "bfloat16"
    with pytest.raises(ValueError, match="'float16' is not one of auto, bfloat16, float32"):
        training.resolve_matmul_dtype("float16")


def _matmul_input_dtypes(concrete_function) -> list[str]:
    """The dtypes of every MatMul / BatchMatMul in a traced function, its loop bodies included."""
    graph = concrete_function.graph.as_graph_def()
    nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
    return [tf.dtypes.as_dtype(node.attr["T"].type).name for node in nodes if "MatMul" in node.op]


def test_bfloat16_matmuls_reach_the_training_step_only_and_train_like_float32(many_windows):
    """The step multiplies in bfloat16; prediction (what evaluation and export trace) stays float32."""
    features, labels = next(iter(training.bucketed_window_dataset(many_windows, 4, 384)))
    initial = _tiny_model().get_weights()
    trained, step_dtypes = {}, {}
    for dtype in ("float32", "bfloat16"):
        model = _tiny_model(initial)
        # Whole batches and micro-batches both take the context.
        for budget in (None, 20):
            config = training.TrainConfig(batch_size=4, train_steps=1, learning_rate=1e-3, attention_budget=budget,
                                          matmul_dtype=dtype)
            training.compile_for_training(model, config)
            step = tf.function(model.train_step).get_concrete_function(
                (features, labels))
            step_dtypes[dtype, budget] = set(_matmul_input_dtypes(step))
        model.set_weights(initial)
        training.compile_for_training(model, training.TrainConfig(batch_size=4, train_steps=1, learning_rate=1.0,
                                                                  matmul_dtype=dtype))
        model.optimizer = training.keras.optimizers.SGD(1.0)  # the update is the gradient itself
        model.train_on_batch(features, labels)
        predict = tf.function(lambda x: model(x, training=False)).get_concrete_function(features)  # noqa: B023
        assert set(_matmul_input_dtypes(predict)) == {"float32"}, dtype
        trained[dtype] = model.get_weights()
    assert step_dtypes["float32", None] == step_dtypes["float32", 20] == {"float32"}
    # The dense layers' matmuls in bfloat16; the attention's activation products stay float32.
    assert step_dtypes["bfloat16", None] == step_dtypes["bfloat16", 20] == {"bfloat16", "float32"}
    # The gradients agree to bfloat16's precision (8 bits of mantissa: ~0.4% per product), and differ.
    def gradient(dtype):
        return np.concatenate([(after - before).ravel() for after, before in zip(trained[dtype], initial, strict=True)])

    error = np.linalg.norm(gradient("bfloat16") - gradient("float32")) / np.linalg.norm(gradient("float32"))
    assert 0 < error < 0.05


def test_xla_steps_compile_whole_batches_and_train_as_the_unfused_step(many_windows, tmp_path):
    """TrainConfig.xla: the step runs XLA-compiled, without micro-batches, and makes the same updates."""
    batches = list(training.bucketed_window_dataset(many_windows, 4, 384).take(3))
    initial = _tiny_model().get_weights()
    trained, steps = {}, {}
    for xla in (False, True):
        model = _tiny_model(initial)
        # A budget that would cut these batches into micro-batches: XLA's steps ignore it.
        config = training.TrainConfig(batch_size=4, train_steps=3, learning_rate=1e-3, attention_budget=20,
                                      matmul_dtype="float32", xla=xla)
        training.compile_for_training(model, config)
        steps[xla] = model.train_step
        for features, labels in batches:
            model.train_on_batch(features, labels)
        trained[xla] = model.get_weights()
    assert getattr(steps[True], "_jit_compile", None) is True
    assert getattr(steps[False], "_jit_compile", None) is None
    graph = steps[True].get_concrete_function(batches[0]).graph.as_graph_def()
    assert not [node for node in graph.node if node.op in ("While", "StatelessWhile")]  # no micro-batch loop
    # Three AdamW updates from the same weights on the same batches: equal to float32 rounding
    # (XLA reorders sums).
    for unfused, fused in zip(trained[False], trained[True], strict=True):
        np.testing.assert_allclose(fused, unfused, rtol=1e-4, atol=1e-5)
    def moved(weights):
        return [not np.array_equal(after, before) for before, after in zip(initial, weights, strict=True)]

    # The same weights moved (not the dropout counter: no dropout), and most of them.
    assert moved(trained[True]) == moved(trained[False])
    assert sum(moved(trained[True])) > len(initial) * 0.9


def test_xla_refuses_a_strategy_of_several_replicas(many_windows):
    """In a process of its own: the two logical CPUs must be made before TensorFlow starts."""
    import subprocess
    import sys

    script = """
import sys
from bertqa.model import distribution, model_spec, training
strategy = distribution.strategy_for_environment(local_devices=2)
with strategy.scope():
    model = training.build_model(model_spec.get("tiny_random"))
config = training.TrainConfig(batch_size=4, train_steps=1, learning_rate=1e-3, xla=True)
try:
    training.train(model, [sys.argv[1]], config, strategy=strategy)
except ValueError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script, many_windows], capture_output=True, text=True,
                          env={**__import__("os").environ, "TF_USE_LEGACY_KERAS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XLA-compiled training steps run on one replica, not the 2 of this strategy" in done.stdout
