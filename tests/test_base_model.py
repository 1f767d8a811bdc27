"""--init-from without a pipeline: what a base path holds, a base that differs refused in one line,
and a BERT checkpoint with a span head copied whole into the model (tiny model, tiny files)."""

import json

import numpy as np
import pytest
from bert_layout import write_bert_qa_checkpoint

from bertqa.model import model_spec, training
from bertqa.operations import base_model
from bertqa.operations.base_model import BaseModelError


@pytest.fixture(scope="module")
def source_model():
    training.keras.utils.set_random_seed(3)
    return training.build_model(model_spec.get("tiny_random"))


@pytest.fixture(scope="module")
def checkpoint_dir(source_model, vocab_path, tmp_path_factory):
    return write_bert_qa_checkpoint(source_model, tmp_path_factory.mktemp("bert_qa"), vocab_path)


def _logits(model):
    ids = np.array([[101, 2054, 2003, 1996, 3642, 2773, 102, 1996, 3642, 2773, 2003, 7701, 1012, 102]], np.int32)
    out = model({"input_word_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": np.zeros_like(ids)})
    return np.stack([out["start_logits"].numpy(), out["end_logits"].numpy()])


def test_a_bert_checkpoint_with_a_span_head_starts_the_encoder_and_the_head(source_model, checkpoint_dir):
    spec = model_spec.get("tiny_random", init_from=str(checkpoint_dir))
    base = base_model.for_spec(spec)
    assert base.kind == base_model.BERT_CHECKPOINT
    training.keras.utils.set_random_seed(11)  # another random start, which the base must replace
    model = training.build_model(spec)
    assert not np.allclose(_logits(model), _logits(source_model))
    base_model.initialise(model, base)
    np.testing.assert_allclose(_logits(model), _logits(source_model), rtol=1e-5, atol=1e-5)


def test_each_layout_is_recognised_and_anything_else_is_refused_naming_them(tmp_path, checkpoint_dir):
    version = tmp_path / "serving" / "1700000000"
    version.mkdir(parents=True)
    (version / "model_record.json").write_text(json.dumps({"saved_model_dir": "/m/Format-Serving",
                                                           "identity": {"name": "tiny_random"}}))
    assert base_model.locate(str(version)) == base_model.BaseModel(
        str(version), base_model.PUSHED_VERSION, "/m/Format-Serving", {"name": "tiny_random"})
    trainer = tmp_path / "Trainer" / "model" / "5"
    (trainer / "Format-Serving").mkdir(parents=True)
    (trainer / "Format-Serving" / "saved_model.pb").write_bytes(b"")
    (trainer / "training_summary.json").write_text(json.dumps({"identity": {"name": "x"}}))
    for path in (trainer, trainer / "Format-Serving"):
        located = base_model.locate(str(path))
        assert (located.kind, located.saved_model_dir, located.identity) == (
            base_model.TRAINER_MODEL, str(trainer / "Format-Serving"), {"name": "x"})
    with pytest.raises(BaseModelError, match="not a model to start from; give a pushed version"):
        base_model.locate(str(tmp_path))


def test_an_encoder_without_a_span_head_is_refused(source_model, vocab_path, tmp_path):
    from safetensors.numpy import load_file, save_file

    encoder_only = write_bert_qa_checkpoint(source_model, tmp_path / "encoder", vocab_path)
    weights = {k: v for k, v in load_file(str(encoder_only / "model.safetensors")).items()
               if not k.startswith("qa_outputs")}
    save_file(weights, str(encoder_only / "model.safetensors"))
    with pytest.raises(BaseModelError, match=r"no span head \(qa_outputs.weight, qa_outputs.bias missing\)"):
        base_model.locate(str(encoder_only))


def test_another_architecture_vocabulary_or_casing_is_refused_in_one_line_naming_it(
        source_model, vocab_path, tmp_path):
    wider = write_bert_qa_checkpoint(source_model, tmp_path / "wider", vocab_path, hidden_size=64)
    with pytest.raises(BaseModelError) as refused:
        base_model.for_spec(model_spec.get("tiny_random", init_from=str(wider)))
    message = str(refused.value)
    assert "\n" not in message and str(wider) in message and "hidden_size 64 in the checkpoint, 32 here" in message
    other_vocab = write_bert_qa_checkpoint(source_model, tmp_path / "vocab", vocab_path)
    (other_vocab / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (other_vocab / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    with pytest.raises(BaseModelError, match="another vocabulary .*; do_lower_case False in the checkpoint, True here"):
        base_model.for_spec(model_spec.get("tiny_random", init_from=str(other_vocab)))


def test_a_pushed_model_of_another_spec_is_refused_naming_what_differs(tmp_path):
    version = tmp_path / "1700000000"
    version.mkdir()
    (version / "model_record.json").write_text(json.dumps({"saved_model_dir": "/m", "identity": {
        "name": "minilm_offline", "seq_len": 384}}))
    with pytest.raises(BaseModelError, match="cannot start this model: a different model .*minilm_offline"):
        base_model.for_spec(model_spec.get("tiny_random", init_from=str(version)))


def test_model_makers_spec_takes_init_from_and_its_model_starts_from_the_base(source_model, checkpoint_dir):
    from bertqa.model_maker import model_spec as mm_spec
    from bertqa.model_maker.question_answer import QuestionAnswer

    spec = mm_spec.get("tiny_random", init_from=str(checkpoint_dir))
    assert spec.to_spec().init_from == str(checkpoint_dir)
    model = QuestionAnswer(spec).create_model()
    np.testing.assert_allclose(_logits(model), _logits(source_model), rtol=1e-5, atol=1e-5)


def test_held_out_scoring_refuses_a_format_it_cannot_score_naming_the_ones_it_can(tmp_path):
    from bertqa_cli.base_model import heldout_scores

    with pytest.raises(ValueError, match=r"cannot score \['model.onnx'\]; choose from saved_model, model.tflite"):
        heldout_scores(None, tmp_path / "heldout.json", ("saved_model", "model.onnx"))
    with pytest.raises(ValueError, match="cannot score no format"):
        heldout_scores(None, tmp_path / "heldout.json", ())


def test_a_base_model_call_after_the_first_peaks_at_half_the_recipes_rate_by_default(tmp_path):
    import local_runner
    from bertqa_cli import base_model as base_model_cli

    args, passed = base_model_cli.parse_args(["--squad-file", "squad.json", "--hours", "1", "--runs-dir",
                                              str(tmp_path), "--spec", "tiny_random", "--learning-rate", "2e-4"])
    assert args.later_rate_scale == 0.5
    state = {"calls": [{"path": str(tmp_path / "v1"), "data_batches": [0, 60]}]}
    config = local_runner.build_config(local_runner.parse_args(base_model_cli.runner_argv(args, state, passed)))
    assert base_model_cli.continuing(config, {"calls": []}, args.later_rate_scale) is config
    assert base_model_cli.continuing(config, state, args.later_rate_scale).spec.learning_rate == pytest.approx(1e-4)
    with pytest.raises(SystemExit):
        base_model_cli.parse_args(["--squad-file", "s.json", "--hours", "1", "--later-rate-scale", "1.5"])
