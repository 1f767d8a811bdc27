"""Length-bucketed batches and the warmup/decay schedule."""

import numpy as np
import pytest
import tensorflow as tf

from bertqa import training
from bertqa.windowing import Window, window_to_tf_example


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
    from bertqa import run_report

    # Batch losses 4, 2, 6, 0, 3: Keras reports their running means 4, 3, 4, 3, 3.
    schedule = _monitor_run(tmp_path, [4.0, 3.0, 4.0, 3.0, 3.0], every=2)
    curve = run_report.read_training_curve(str(tmp_path))
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
