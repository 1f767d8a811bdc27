"""TF Hub specs: modules in each BERT hub format load through the spec, train, export; an unreachable hub fails fast.

No hub is reachable from the tests, so each test builds a tiny module in the format of
the real ones: the legacy TF2 BERT modules (list in, [pooled, sequence] out, a
`vocab_file` asset and a `do_lower_case` variable), the newer dict-in/dict-out TF2
modules, and the TF1 Hub format of the MobileBERT modules (`tokens` and `squad`
signatures).
"""

import dataclasses
import hashlib
import os
import shutil
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from bertqa.data import squad_io, windowing
from bertqa.data.tokenization import TokenizerConfig, WordPieceTokenizer
from bertqa.model import evaluation, hub_encoder, model_spec, serving, training

HIDDEN = 16
WINDOW = windowing.WindowConfig(seq_len=64, query_len=16, doc_stride=32)
MOBILEBERT = "https://tfhub.dev/google/mobilebert/uncased_L-24_H-128_B-512_A-4_F-4_OPT/1"
_IDS = [tf.TensorSpec([None, None], tf.int32, name=name) for name in ("input_word_ids", "input_mask", "input_type_ids")]


def _vocab_size(vocab_file: str) -> int:
    with open(vocab_file) as f:
        return sum(1 for line in f if line.strip())


def _encoder_variables(vocab_size: int):
    tf.random.set_seed(0)
    return {
        "word_embeddings": tf.Variable(tf.random.normal([vocab_size, HIDDEN], stddev=0.02), name="word_embeddings"),
        "type_embeddings": tf.Variable(tf.random.normal([2, HIDDEN], stddev=0.02), name="type_embeddings"),
        "dense": tf.Variable(tf.random.normal([HIDDEN, HIDDEN], stddev=0.3), name="dense"),
    }


def _encode(variables, ids, mask, type_ids):
    hidden = tf.nn.embedding_lookup(variables["word_embeddings"], ids)
    hidden += tf.nn.embedding_lookup(variables["type_embeddings"], type_ids)
    sequence = tf.tanh(tf.einsum("bsh,hk->bsk", hidden, variables["dense"]))
    sequence *= tf.cast(mask, tf.float32)[:, :, tf.newaxis]  # (batch, seq, hidden)
    return tf.tanh(sequence[:, 0]), sequence  # pooled (batch, hidden), sequence


def _save_tf2_module(path: str, vocab_file: str, dict_format: bool, do_lower_case: bool = True) -> str:
    """A reusable SavedModel laid out like the TF2 BERT modules on tfhub.dev."""
    variables = _encoder_variables(_vocab_size(vocab_file))
    root = tf.train.Checkpoint(**variables)
    root.vocab_file = tf.saved_model.Asset(vocab_file)  # saved as assets/vocab.txt
    root.do_lower_case = tf.Variable(do_lower_case, trainable=False)
    # The attributes of the reusable SavedModel API that hub.KerasLayer reads.
    root.variables = [*variables.values(), root.do_lower_case]
    root.trainable_variables = list(variables.values())
    root.regularization_losses = []

    @tf.function
    def call(inputs, training=False):
        if dict_format:
            pooled, sequence = _encode(variables, inputs["input_word_ids"], inputs["input_mask"],
                                       inputs["input_type_ids"])
            return {"pooled_output": pooled, "sequence_output": sequence}
        pooled, sequence = _encode(variables, *inputs)
        return [pooled, sequence]

    inputs = {spec.name: spec for spec in _IDS} if dict_format else list(_IDS)
    for training_mode in (True, False):  # as the real modules: one trace per value of `training`
        call.get_concrete_function(inputs, training_mode)
    root.__call__ = call
    tf.saved_model.save(root, path)
    return path


def _save_tf1_module(path: str, vocab_file: str, with_squad_head: bool, static_seq_len: int | None = None) -> str:
    """A module in the TF1 Hub format of the MobileBERT modules: `tokens` (and `squad`) signatures."""
    initial = {name: value.numpy() for name, value in _encoder_variables(_vocab_size(vocab_file)).items()}
    graph = tf.Graph()
    with graph.as_default():
        ids, mask, segments = (tf.compat.v1.placeholder(tf.int32, [None, static_seq_len], name=name)
                               for name in ("input_ids", "input_mask", "segment_ids"))
        variables = {name: tf.compat.v1.get_variable(f"bert/{name}", initializer=value)
                     for name, value in initial.items()}
        tf.compat.v1.get_variable("global_step", [], tf.int64, trainable=False,
                                  initializer=tf.compat.v1.zeros_initializer())
        pooled, sequence = _encode(variables, ids, mask, segments)
        info = tf.compat.v1.saved_model.build_tensor_info
        inputs = {"input_ids": info(ids), "input_mask": info(mask), "segment_ids": info(segments)}
        build = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        signatures = {"tokens": build(inputs, {"sequence_output": info(sequence), "pooled_output": info(pooled)})}
        if with_squad_head:
            head = tf.compat.v1.get_variable("cls/squad/output_weights", [HIDDEN, 2])
            logits = tf.einsum("bsh,hk->bsk", sequence, head)
            signatures["squad"] = build(inputs, {"start_logits": info(logits[..., 0]),
                                                 "end_logits": info(logits[..., 1])})
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, tags=[], signature_def_map=signatures)
            builder.save()
    os.makedirs(os.path.join(path, "assets"), exist_ok=True)
    shutil.copyfile(vocab_file, os.path.join(path, "assets", "vocab.txt"))
    open(os.path.join(path, "tfhub_module.pb"), "wb").close()  # what marks the TF1 Hub format
    return path


@pytest.fixture(scope="module")
def legacy_module(tmp_path_factory, vocab_path):
    return _save_tf2_module(str(tmp_path_factory.mktemp("legacy") / "module"), vocab_path, dict_format=False)


@pytest.fixture(scope="module")
def window_files(tmp_path_factory, fixtures_dir, vocab_path):
    examples, _ = squad_io.read_squad_file(str(fixtures_dir / "tiny_train.json"))
    windows, _ = windowing.make_windows(examples, WordPieceTokenizer(TokenizerConfig(vocab_path)), WINDOW, True)
    path = str(tmp_path_factory.mktemp("windows") / "train.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for window in windows:
            writer.write(windowing.window_to_tf_example(window).SerializeToString())
    return [path], windows


def _hub_spec(handle: str, **overrides) -> model_spec.BertQaSpec:
    return model_spec.get("bert_qa", hub_handle=handle, seq_len=WINDOW.seq_len, query_len=WINDOW.query_len,
                          doc_stride=WINDOW.doc_stride, learning_rate=1e-2, **overrides)


def _hub_weights(model) -> list[tf.Variable]:
    """The module's float weights (not its boolean do_lower_case)."""
    return [w for w in model.get_layer("encoder").weights if w.dtype == tf.float32]


def _train_two_steps(model, files) -> float:
    config = training.TrainConfig(batch_size=4, train_steps=2, learning_rate=1e-2, seq_len=WINDOW.seq_len)
    return float(training.train(model, files, config).history["loss"][-1])


def _logits(model, batch: int, length: int):
    ids = np.full((batch, length), 1000, np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    out = model({"input_word_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": np.zeros_like(ids)},
                training=False)
    return out["start_logits"].numpy(), out["end_logits"].numpy()


def test_legacy_list_module_loads_through_the_spec_and_fine_tunes(legacy_module, window_files):
    spec = _hub_spec(legacy_module)
    model = training.build_model(spec)
    assert model.get_layer("encoder").module_call.signature.kind == "list"
    hub_variables = _hub_weights(model)
    trainable = {id(w) for w in model.trainable_weights}
    assert len(hub_variables) == 3 and all(id(w) in trainable for w in hub_variables)

    before = [w.numpy().copy() for w in hub_variables]
    loss = _train_two_steps(model, window_files[0])
    assert np.isfinite(loss)
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, hub_variables, strict=True))
    start, end = _logits(model, batch=3, length=40)
    assert start.shape == end.shape == (3, 40)


def test_untrainable_spec_keeps_the_module_weights_fixed(legacy_module, window_files):
    model = training.build_model(_hub_spec(legacy_module, trainable=False))
    hub_variables = _hub_weights(model)
    trainable = {id(w) for w in model.trainable_weights}
    assert not any(id(w) in trainable for w in hub_variables)
    assert len(model.trainable_weights) == 2  # the span head's kernel and bias
    before = [w.numpy().copy() for w in hub_variables]
    _train_two_steps(model, window_files[0])
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, hub_variables, strict=True))


def test_vocab_and_do_lower_case_come_from_the_module(tmp_path, vocab_path, legacy_module, caplog):
    assert _hub_spec(legacy_module).resolved_vocab_path() == os.path.join(legacy_module, "assets", "vocab.txt")
    assert _hub_spec(legacy_module).resolved_do_lower_case() is True
    cased = _save_tf2_module(str(tmp_path / "cased"), vocab_path, dict_format=False, do_lower_case=False)
    assert _hub_spec(cased).resolved_do_lower_case() is False
    assert "using the module's value" in caplog.text


def test_hub_spec_travels_as_json_with_its_handle():
    spec = model_spec.get("mobilebert_qa_squad")
    assert spec.hub_handle.endswith("/squadv1/1")
    assert model_spec.from_json(model_spec.to_json(spec)) == spec


def test_hub_model_exports_a_saved_model_with_the_same_logits(legacy_module, vocab_path, tmp_path):
    model = training.build_model(_hub_spec(legacy_module))
    serving.export_saved_model(model, vocab_path, True, WINDOW, str(tmp_path / "saved_model"))
    ids = np.array([[101, 2054, 2003, 102, 3000, 3001, 102, 0]], np.int32)
    mask, types = (ids > 0).astype(np.int32), np.array([[0, 0, 0, 0, 1, 1, 1, 0]], np.int32)
    start, end = evaluation.saved_model_logits_fn(str(tmp_path / "saved_model"))(ids, mask, types)
    expected = model({"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}, training=False)
    np.testing.assert_allclose(start, expected["start_logits"].numpy(), atol=1e-5)
    np.testing.assert_allclose(end, expected["end_logits"].numpy(), atol=1e-5)


def test_dict_module_is_detected_from_its_signature(tmp_path, vocab_path):
    module = _save_tf2_module(str(tmp_path / "dict"), vocab_path, dict_format=True)
    model = training.build_model(_hub_spec(module))
    assert model.get_layer("encoder").module_call.signature.kind == "dict"
    start, end = _logits(model, batch=2, length=24)
    assert start.shape == end.shape == (2, 24)


def test_tf1_module_fine_tunes_through_its_tokens_signature(tmp_path, vocab_path, window_files):
    module = _save_tf1_module(str(tmp_path / "tf1"), vocab_path, with_squad_head=False)
    model = training.build_model(_hub_spec(module))
    assert model.get_layer("encoder").module_call.signature.kind == "tf1_tokens"
    hub_variables = model.get_layer("encoder").trainable_weights
    assert sorted(w.name for w in hub_variables) == ["bert/dense:0", "bert/type_embeddings:0",
                                                     "bert/word_embeddings:0"]  # not global_step
    before = [w.numpy().copy() for w in hub_variables]
    assert np.isfinite(_train_two_steps(model, window_files[0]))
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, hub_variables, strict=True))


def test_tf1_squad_module_answers_with_its_own_span_head(tmp_path, vocab_path):
    # Model Maker's mobilebert_qa_squad: the module's `squad` signature is the whole QA model.
    module = _save_tf1_module(str(tmp_path / "squad"), vocab_path, with_squad_head=True)
    model = training.build_model(_hub_spec(module))
    assert model.get_layer("encoder").module_call.signature.kind == "tf1_squad"
    assert "cls/squad/output_weights:0" in {w.name for w in model.trainable_weights}
    ids = np.array([[101, 2054, 102, 3000, 102, 0, 0]], np.int32)
    out = model({"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32),
                 "input_type_ids": np.zeros_like(ids)}, training=False)
    assert out["start_logits"].shape == (1, 7)
    assert (out["end_logits"].numpy()[0, 5:] < -1000).all()  # padding can never be an answer


def test_module_with_a_fixed_sequence_length_takes_shorter_batches(tmp_path, vocab_path, window_files):
    # Training batches are padded to their length bucket, not to the module's fixed length.
    module = _save_tf1_module(str(tmp_path / "fixed"), vocab_path, with_squad_head=False, static_seq_len=96)
    model = training.build_model(_hub_spec(module))
    assert model.get_layer("encoder").module_call.signature.static_seq_len == 96
    short_start, _ = _logits(model, batch=1, length=24)
    assert short_start.shape == (1, 24)
    assert np.isfinite(_train_two_steps(model, window_files[0]))
    with pytest.raises(ValueError, match="seq_len 128 exceeds the 96 tokens"):
        training.build_model(dataclasses.replace(_hub_spec(module), seq_len=128))


def _no_dns(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.mark.parametrize("handle, simulate_dns_failure", [
    (MOBILEBERT, True),
    # .invalid never resolves (RFC 2606): a real lookup failure, whatever the network.
    ("https://tfhub.invalid/google/mobilebert/uncased_L-24_H-128_B-512_A-4_F-4_OPT/1", False),
])
def test_unreachable_hub_fails_fast_saying_how_to_use_a_local_copy(
        handle, simulate_dns_failure, monkeypatch, tmp_path):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    if simulate_dns_failure:
        _no_dns(monkeypatch)
    started = time.monotonic()
    with pytest.raises(hub_encoder.HubUnreachableError) as raised:
        training.build_model(_hub_spec(handle))
    assert time.monotonic() - started < 15
    message = str(raised.value)
    assert handle in message and "cannot be downloaded" in message
    assert "tar -xzf" in message and 'hub_handle="/models/mobilebert_' in message and "spec.uri" in message
    sha1 = hashlib.sha1(handle.encode()).hexdigest()
    assert f"$TFHUB_CACHE_DIR/{sha1}" in message and f"TFHUB_CACHE_DIR={tmp_path / 'cache'}" in message


def test_module_in_the_hub_cache_is_used_without_the_network(legacy_module, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(legacy_module, cache / hashlib.sha1(MOBILEBERT.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    _no_dns(monkeypatch)
    spec = _hub_spec(MOBILEBERT)
    assert spec.resolved_vocab_path().startswith(str(cache))
    start, _ = _logits(training.build_model(spec), batch=1, length=8)
    assert start.shape == (1, 8)


def test_local_handle_that_is_not_a_module_says_what_is_missing(tmp_path):
    (tmp_path / "model.tar.gz").write_bytes(b"")
    with pytest.raises(hub_encoder.HubModuleError, match="has no saved_model.pb"):
        training.build_model(_hub_spec(str(tmp_path)))
    with pytest.raises(hub_encoder.HubModuleError, match="is not a directory"):
        training.build_model(_hub_spec(str(tmp_path / "missing")))
