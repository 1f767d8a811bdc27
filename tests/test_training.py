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
