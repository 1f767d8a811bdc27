"""The parts of retraining on their own: the baseline verdict, model identity, the push
records, warm start and the runs-directory lock."""

import json
import os

import numpy as np
import pytest

from bertqa.model import model_spec, serving, training
from bertqa.operations import pushed_models, run_lock
from components.squad_evaluator import core as evaluator

BASELINE = evaluator.Baseline(version="100", model_id=7, saved_model_dir="/nowhere", identity={"name": "x"}, span=1)


def _comparison(baseline_f1):
    return evaluator.BaselineComparison(BASELINE, {"f1": baseline_f1, "exact_match": 0.0}, None)


@pytest.mark.parametrize(("f1", "baseline_f1", "tolerance", "blessed"), [
    (50.0, 50.0, 0.0, True),    # equal is not worse
    (49.9, 50.0, 0.0, False),
    (49.5, 50.0, 1.0, True),    # within the tolerance
    (48.0, 50.0, 1.0, False),
    (30.0, 10.0, 0.0, False),   # better than the baseline but under min_f1
])
def test_blessing_against_a_baseline(f1, baseline_f1, tolerance, blessed):
    verdict, reason = evaluator.bless({"f1": f1}, evaluator.BlessingConfig(min_f1=40.0, max_f1_regression=tolerance),
                                      _comparison(baseline_f1))
    assert verdict is blessed
    if f1 >= 40.0:
        assert "baseline version 100 (model 7)" in reason


def test_first_run_is_judged_on_min_f1_alone():
    assert evaluator.bless({"f1": 41.0}, evaluator.BlessingConfig(min_f1=40.0)) == (
        True, "f1 41.00 >= min_f1 40.00; no baseline (nothing pushed yet)")


def test_a_baseline_that_cannot_be_compared_fails_closed():
    comparison = evaluator.BaselineComparison(BASELINE, None, "a different model (vocab_sha256 'a' vs 'b')")
    blessed, reason = evaluator.bless({"f1": 99.0}, evaluator.BlessingConfig(min_f1=0.0), comparison)
    assert not blessed and "cannot be compared: a different model (vocab_sha256" in reason


def test_identity_ignores_training_tunables_and_names_what_differs(vocab_path, tmp_path):
    spec = json.loads(model_spec.to_json(model_spec.get("tiny_random")))
    identity = pushed_models.model_identity(spec, vocab_path)
    retuned = pushed_models.model_identity({**spec, "learning_rate": 1.0, "default_batch_size": 3}, vocab_path)
    assert pushed_models.comparability_problem(identity, retuned) is None
    other_vocab = tmp_path / "vocab.txt"
    other_vocab.write_text("[PAD]\n[UNK]\n")
    problem = pushed_models.comparability_problem(identity, pushed_models.model_identity(
        {**spec, "seq_len": 256}, str(other_vocab)))
    assert "seq_len 256 vs 384" in problem and "vocab_sha256" in problem


def _push(serving_dir, version, files=pushed_models.REQUIRED_FILES, span=1):
    folder = serving_dir / version
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text(json.dumps({"span": span, "saved_model_dir": "/m", "model_id": int(version)}))
    return folder


def test_latest_pushed_is_the_newest_complete_version(tmp_path):
    assert pushed_models.latest_pushed(str(tmp_path / "absent")) is None
    _push(tmp_path, "100", span=1)
    _push(tmp_path, "200", span=2)
    _push(tmp_path, "300", files=("model.tflite",), span=3)  # a push cut short
    (tmp_path / "notes").mkdir()
    latest = pushed_models.latest_pushed(str(tmp_path))
    assert (latest.version, latest.span, latest.model_id) == ("200", 2, 200)
    assert [m.version for m in pushed_models.list_pushed(str(tmp_path))] == ["100", "200"]
    assert pushed_models.find_pushed(str(tmp_path), str(tmp_path / "100" / "model.tflite")).version == "100"


@pytest.fixture(scope="module")
def exported_tiny(tmp_path_factory):
    spec = model_spec.get("tiny_random")
    model = training.build_model(spec)
    path = str(tmp_path_factory.mktemp("baseline") / "saved_model")
    serving.export_saved_model(model, spec.resolved_vocab_path(), True, spec.window_config(), path,
                               on_device_lengths=spec.on_device_lengths)
    return model, path


def test_warm_start_copies_every_weight_of_the_baseline(exported_tiny):
    baseline, path = exported_tiny
    model = training.build_model(model_spec.get("tiny_random"))
    assert not np.allclose(model.weights[0].numpy(), baseline.weights[0].numpy())
    assert training.warm_start(model, path) is None
    for mine, theirs in zip(model.weights, baseline.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_warm_start_refuses_another_architecture_and_changes_nothing(exported_tiny):
    _, path = exported_tiny
    from bertqa.model.modeling import EncoderConfig

    wider = model_spec.get("tiny_random", random_encoder=EncoderConfig(
        hidden_size=48, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=512))
    model = training.build_model(wider)
    before = [w.numpy().copy() for w in model.weights]
    problem = training.warm_start(model, path)
    assert problem is not None and "shape" in problem
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), old)
    assert "cannot be loaded" in training.warm_start(model, os.path.dirname(path) + "/missing")


def test_the_runs_lock_admits_one_holder_and_names_it(tmp_path):
    path = run_lock.lock_path(str(tmp_path / "runs"), "bertqa")
    with run_lock.runs_lock(path), pytest.raises(run_lock.RunsLocked,
                                                 match=rf"{path} is held by pid {os.getpid()} on "), \
            run_lock.runs_lock(path):
        pass
    with run_lock.runs_lock(path):  # released when the holder is done
        pass


def test_the_runs_lock_names_a_runs_directory_it_cannot_create(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the runs directory should be")
    with pytest.raises(run_lock.RunsDirError) as raised, run_lock.runs_lock(
            run_lock.lock_path(str(blocker), "bertqa")):
        pass
    assert str(blocker) in raised.value.strerror and "--runs-dir" in raised.value.strerror
