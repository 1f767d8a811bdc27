"""TFLiteExporter: every quantization variant exported, scored, timed, checked and blessed; only blessed ones pushed.

The core runs on a real project model (tiny_random's encoder and span head, untrained,
exported by bertqa.model.serving) and the tiny fixtures. Its F1 is a few points at most, so
blessing outcomes are forced through the reference F1 the variants are compared with:
a reference 50 points above any variant makes every drop about 50 points.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from bertqa.data import windowing
from bertqa.data.raw_example import to_tf_example
from bertqa.data.tokenization import TokenizerConfig
from bertqa.model import evaluation, model_spec, serving, training
from bertqa.on_device import task_library
from components.bert_qa_transform import tokenizer_artifact
from components.tflite_exporter import component, core

OFFSET = 50.0  # reference F1 above the SavedModel's: every variant then drops ~50 points


@pytest.fixture(scope="module")
def spec():
    return model_spec.get("tiny_random")


@pytest.fixture(scope="module")
def window_config(spec):
    return windowing.WindowConfig(seq_len=spec.seq_len, query_len=spec.query_len, doc_stride=spec.doc_stride)


@pytest.fixture(scope="module")
def saved_model(spec, window_config, tmp_path_factory) -> str:
    tf.keras.utils.set_random_seed(1)
    path = str(tmp_path_factory.mktemp("saved_model") / "Format-Serving")
    serving.export_saved_model(training.build_model(spec), spec.resolved_vocab_path(), True, window_config, path,
                               on_device_lengths=spec.on_device_lengths)
    return path


@pytest.fixture(scope="module")
def eval_data(spec, window_config, fixtures_dir) -> core.EvalData:
    tokenizer = TokenizerConfig(spec.resolved_vocab_path(), True)
    return core.EvalData(*evaluation.squad_file_windows(str(fixtures_dir / "tiny_eval.json"), tokenizer,
                                                        window_config))


@pytest.fixture(scope="module")
def train_windows(spec, window_config, fixtures_dir):
    tokenizer = TokenizerConfig(spec.resolved_vocab_path(), True)
    return evaluation.squad_file_windows(str(fixtures_dir / "tiny_train.json"), tokenizer, window_config,
                                         is_training=True)[1]


@pytest.fixture(scope="module")
def reference(saved_model, eval_data) -> core.Metrics:
    return core.saved_model_metrics(saved_model, eval_data, evaluation.EvalConfig())


def _export(directory, saved_model, spec, eval_data, reference, train_windows, variants, limits=None,
            upstream_blessed=True, push_order=core.DEFAULT_PUSH_ORDER) -> core.ExportReport:
    plan = core.ExportPlan(variants=variants, max_f1_drop=limits or {}, representative_steps=8, latency_runs=2,
                           push_order=push_order)
    return core.export_variants(saved_model, spec.resolved_vocab_path(), str(directory),
                                str(directory / "Format-Serving"), plan, eval_data, reference,
                                evaluation.EvalConfig(), core.representative_windows(train_windows, 8),
                                upstream_blessed=upstream_blessed)


@pytest.fixture(scope="module")
def all_variants(tmp_path_factory, saved_model, spec, eval_data, reference, train_windows):
    """Every variant against a reference 50 points too high: float32 (limit 0) fails, the rest (limit 100) pass."""
    directory = tmp_path_factory.mktemp("exported")
    high = core.Metrics(reference.exact_match, reference.f1 + OFFSET)
    limits = {"none": 0.0, "dynamic": 100.0, "float16": 100.0, "int8": 100.0}
    report = _export(directory, saved_model, spec, eval_data, high, train_windows, core.VARIANTS, limits)
    return directory, report, high


def test_every_variant_is_exported_scored_timed_and_checked(all_variants):
    directory, report, high = all_variants
    assert [v.variant for v in report.variants] == list(core.VARIANTS)
    for v in report.variants:
        assert v.size_bytes == os.path.getsize(directory / v.file) > 100_000
        assert set(v.latency_ms) == {1, 2} and all(ms > 0 for ms in v.latency_ms.values())
        assert 0.0 <= v.exact_match <= v.f1 <= 100.0
        assert v.f1_drop == pytest.approx(high.f1 - v.f1)
        assert v.task_library_ok and v.task_library_problems == ()
    sizes = {v.variant: v.size_bytes for v in report.variants}
    # Each quantized file is smaller than the float one (on this tiny model the shorter signatures'
    # position rows outweigh the weights, so dynamic and int8 are not below float16's one signature).
    assert max(sizes["dynamic"], sizes["float16"], sizes["int8"]) < sizes["none"]


def test_float_variant_scores_exactly_what_the_saved_model_scores(all_variants, reference):
    # float32 TFLite and the SavedModel compute the same logits (up to rounding): same answers.
    assert all_variants[1].variant("none").f1 == pytest.approx(reference.f1, abs=1e-6)


def test_only_blessed_variants_are_pushed_and_model_tflite_is_the_dynamic_one(all_variants):
    directory, report, _ = all_variants
    blessed = {v.variant: v.blessed for v in report.variants}
    assert blessed == {"none": False, "dynamic": True, "float16": True, "int8": True}
    assert report.blessed and report.pushed_variants == ("dynamic", "float16", "int8")
    serving = directory / "Format-Serving"
    assert sorted(os.listdir(serving)) == ["model.tflite", "model_float16.tflite", "model_int8.tflite",
                                           "variants.json", "vocab.txt"]
    assert os.listdir(directory / "candidates") == ["model_float32.tflite"]
    assert report.variant("dynamic").file == os.path.join("Format-Serving", "model.tflite")
    assert os.path.getsize(serving / "model.tflite") == report.variant("dynamic").size_bytes


def test_every_pushed_file_runs_in_the_task_library(all_variants):
    serving = all_variants[0] / "Format-Serving"
    context = "The tower was finished in 1889 in Paris ."
    for name in ("model.tflite", "model_float16.tflite", "model_int8.tflite"):
        # An untrained model may rank no valid span in the Task Library's top 5 starts and ends;
        # what matters here is that it loads, runs, and any answer is a span of the context.
        answers = task_library.answer_with_task_library(str(serving / name), context, "When?", top_k=3)
        assert all(text in context for text, _ in answers), name


def test_variants_json_records_every_variant_and_the_verdict(all_variants):
    directory, report, high = all_variants
    recorded = json.loads((directory / "variants.json").read_text())
    assert recorded == json.loads((directory / "Format-Serving" / "variants.json").read_text())
    assert recorded["blessed"] is True and recorded["pushed_variant"] == "dynamic"
    assert recorded["push_reason"] == report.push_reason
    assert recorded["saved_model"]["f1"] == pytest.approx(high.f1)
    by_name = {v["variant"]: v for v in recorded["variants"]}
    assert set(by_name) == set(core.VARIANTS)
    none = by_name["none"]
    assert none["blessed"] is False and none["max_f1_drop"] == 0.0 and "> 0.00" in none["reason"]
    assert set(none["latency_ms"]) == {"1", "2"}
    assert {"size_bytes", "exact_match", "f1", "f1_drop", "task_library_ok"} <= set(none)


def test_push_rule_falls_back_to_float16_when_the_dynamic_variant_misses_its_limit(
        tmp_path, saved_model, spec, eval_data, reference, train_windows):
    # Every variant drops ~50 points: dynamic (limit 0) misses, float16 (limit 100) meets its own.
    high = core.Metrics(reference.exact_match, reference.f1 + OFFSET)
    report = _export(tmp_path, saved_model, spec, eval_data, high, train_windows, ("dynamic",),
                     limits={"dynamic": 0.0, "float16": 100.0})
    # float16 was not asked for: it was exported because dynamic missed; none, after it, never was.
    assert [v.variant for v in report.variants] == ["dynamic", "float16"]
    assert report.blessed and report.pushed_variant == "float16" and report.pushed_variants == ("float16",)
    assert report.push_reason.startswith("model.tflite is float16: dynamic is not (F1 drop")
    assert "so the next in the push order: float16 is blessed" in report.push_reason
    assert report.reason.startswith(report.push_reason)
    serving = tmp_path / "Format-Serving"
    assert sorted(os.listdir(serving)) == ["model.tflite", "variants.json", "vocab.txt"]
    assert os.path.getsize(serving / "model.tflite") == report.variant("float16").size_bytes
    assert os.listdir(tmp_path / "candidates") == ["model_dynamic.tflite"]
    recorded = json.loads((serving / "variants.json").read_text())
    assert recorded["pushed_variant"] == "float16" and recorded["push_reason"] == report.push_reason


def test_push_is_not_blessed_when_no_variant_of_the_push_order_meets_its_limit(
        tmp_path, saved_model, spec, eval_data, reference, train_windows):
    high = core.Metrics(reference.exact_match, reference.f1 + OFFSET)
    report = _export(tmp_path, saved_model, spec, eval_data, high, train_windows, ("dynamic",), push_order=("dynamic",))
    assert not report.variant("dynamic").blessed
    assert not report.blessed and report.pushed_variants == () and report.pushed_variant is None
    assert report.reason == report.push_reason
    assert report.reason.startswith("no variant of the push order dynamic is blessed: dynamic is not (F1 drop")
    assert not (tmp_path / "Format-Serving").exists()
    recorded = json.loads((tmp_path / "variants.json").read_text())
    assert recorded["blessed"] is False and recorded["pushed_variant"] is None


def _variant_report(name: str, blessed: bool) -> core.VariantReport:
    return core.VariantReport(variant=name, file=core.FILE_NAMES[name], size_bytes=1, latency_ms={}, exact_match=0.0,
                              f1=0.0, f1_drop=0.0, max_f1_drop=0.0, task_library_ok=True, task_library_problems=(),
                              blessed=blessed, reason="ok" if blessed else "too far")


@pytest.mark.parametrize(("blessed", "order", "chosen"), [
    ({"dynamic": True, "float16": True}, ("dynamic", "float16", "none"), "dynamic"),
    ({"dynamic": False, "float16": True}, ("dynamic", "float16", "none"), "float16"),
    ({"dynamic": False, "float16": False, "none": True}, ("dynamic", "float16", "none"), "none"),
    ({"dynamic": True, "int8": True}, ("int8", "dynamic"), "int8"),
    ({"dynamic": True, "int8": True}, ("float16",), None),  # float16 was never exported
    ({"dynamic": False}, ("dynamic", "float16", "none"), None),
])
def test_push_rule_takes_the_first_blessed_variant_of_the_order(blessed, order, chosen):
    reports = [_variant_report(name, ok) for name, ok in blessed.items()]
    variant, reason = core.choose_pushed_variant(reports, order)
    assert variant == chosen
    assert reason.startswith(f"model.tflite is {chosen}: " if chosen else "no variant of the push order")


def test_nothing_is_published_when_the_saved_model_was_not_blessed(
        tmp_path, saved_model, spec, eval_data, reference, train_windows):
    report = _export(tmp_path, saved_model, spec, eval_data, reference, train_windows, ("dynamic",),
                     limits={"dynamic": 100.0}, upstream_blessed=False)
    assert report.variant("dynamic").blessed and not report.blessed
    assert "SquadEvaluator" in report.reason
    assert report.pushed_variant is None and "SquadEvaluator did not bless" in report.push_reason
    assert not (tmp_path / "Format-Serving").exists()


def test_int8_without_representative_windows_is_refused(tmp_path, saved_model, spec, eval_data, reference):
    plan = core.ExportPlan(variants=("dynamic", "int8"))
    with pytest.raises(ValueError, match="representative"):
        core.export_variants(saved_model, spec.resolved_vocab_path(), str(tmp_path), str(tmp_path / "s"), plan,
                             eval_data, reference, evaluation.EvalConfig(), representative=())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"push_order": ("dynamic", "int4")}, "Unknown or no variants in the push order"),
    ({"push_order": ()}, "Unknown or no variants in the push order"),
    ({"push_order": ("float16", "float16")}, "more than once"),
    ({"variants": ("dynamic", "int4")}, "Unknown"),
    ({"variants": ("dynamic", "dynamic")}, "more than once"),
    ({"max_f1_drop": {"int8": -1.0}}, "must be a number of points"),
    ({"max_f1_drop": {"fp16": 1.0}}, "unknown variant"),
    ({"latency_runs": 0}, "at least 1"),
])
def test_export_plan_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        core.ExportPlan(**kwargs)


def test_export_plan_limits_default_per_variant_and_can_be_overridden():
    plan = core.ExportPlan(max_f1_drop={"int8": 3.5})
    assert {v: plan.limit(v) for v in core.VARIANTS} == {"none": 0.2, "dynamic": 1.0, "float16": 0.2, "int8": 3.5}
    assert "dynamic" in core.DEFAULT_VARIANTS and core.DEFAULT_PUSH_ORDER == ("dynamic", "float16", "none")


def test_parsers_read_command_line_variants_and_limits():
    assert core.parse_variants("all") == core.VARIANTS
    assert core.parse_variants(" dynamic, int8 ") == ("dynamic", "int8")
    assert core.parse_max_f1_drop(["int8=3", "float16=0.5"]) == {"int8": 3.0, "float16": 0.5}
    with pytest.raises(ValueError, match="VARIANT=POINTS"):
        core.parse_max_f1_drop(["int8"])


def test_bless_compares_the_drop_with_the_limit():
    assert core.bless(1.0, 1.0) == (True, "F1 drop 1.00 <= 1.00 points")
    assert core.bless(-3.0, 0.2)[0]
    assert core.bless(2.01, 2.0) == (False, "F1 drop 2.01 > 2.00 points")


def test_representative_windows_are_spread_over_the_split(train_windows):
    picked = core.representative_windows(train_windows, 4)
    assert len(picked) == 4
    ids = [tuple(p["input_word_ids"]) for p in picked]
    assert ids[0] == train_windows[0].input_word_ids and ids[-1] == train_windows[-1].input_word_ids
    assert all(p["input_word_ids"].dtype == np.int32 for p in picked)
    assert len(core.representative_windows(train_windows, 10_000)) == len(train_windows)


@pytest.mark.parametrize("metrics", [{"exact_match": 40.0, "f1": 55.5}, {"exact": 40.0, "f1": 55.5, "total": 3}])
def test_reference_metrics_are_read_from_the_evaluators_metrics_json(tmp_path, metrics):
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    reference, config = core.read_reference(str(tmp_path), evaluation.EvalConfig())
    assert reference == core.Metrics(exact_match=40.0, f1=55.5)
    assert config == evaluation.EvalConfig()


def test_squad2_variants_are_scored_at_the_evaluators_tuned_null_threshold(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"exact": 40.0, "f1": 44.4, "null_score_diff_threshold": -4.09}))
    _, config = core.read_reference(str(tmp_path), evaluation.EvalConfig(version_2_with_negative=True))
    assert config.null_score_diff_threshold == pytest.approx(-4.09)
    _, v1_config = core.read_reference(str(tmp_path), evaluation.EvalConfig())
    assert v1_config.null_score_diff_threshold == 0.0  # a SQuAD 1.1 run never predicts "no answer"


# --- The TFX glue, run directly on artifacts laid out as the upstream components write them ----------


def _write_records(path, protos) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for proto in protos:
            writer.write(proto.SerializeToString())


@pytest.fixture()
def executor_inputs(tmp_path, saved_model, spec, window_config, eval_data, train_windows):
    def artifact(kind, name):
        a = kind()
        a.uri = str(tmp_path / name)
        os.makedirs(a.uri, exist_ok=True)
        return a

    model = artifact(standard_artifacts.Model, "model")
    os.symlink(saved_model, os.path.join(model.uri, "Format-Serving"))
    upstream = artifact(standard_artifacts.ModelBlessing, "upstream_blessing")
    upstream.set_int_custom_property("blessed", 1)
    tokenizer = artifact(standard_artifacts.TransformGraph, "tokenizer")
    tokenizer_artifact.write_tokenizer_artifact(
        tokenizer_artifact.TransformConfig(spec.resolved_vocab_path(), True, window_config), tokenizer.uri)
    examples = artifact(standard_artifacts.Examples, "examples")
    examples.split_names = artifact_utils.encode_split_names(["eval"])
    _write_records(os.path.join(examples.uri, "Split-eval", "data.gz"), map(to_tf_example, eval_data.examples))
    windows = artifact(standard_artifacts.Examples, "windows")
    windows.split_names = artifact_utils.encode_split_names(["train", "eval"])
    _write_records(os.path.join(windows.uri, "Split-eval", "w.gz"),
                   map(windowing.window_to_tf_example, eval_data.windows))
    _write_records(os.path.join(windows.uri, "Split-train", "w.gz"),
                   map(windowing.window_to_tf_example, train_windows))
    inputs = {"model": [model], "model_blessing": [upstream], "transform_graph": [tokenizer],
              "examples": [examples], "transformed_examples": [windows]}
    outputs = {"exported_model": [artifact(standard_artifacts.Model, "exported")],
               "blessing": [artifact(standard_artifacts.ModelBlessing, "blessing")]}
    # No push_order: as a pipeline compiled before the push rule passes them (the default order applies).
    properties = {"variants": json.dumps(["dynamic", "int8"]),
                  "max_f1_drop": json.dumps({"dynamic": 100.0, "int8": 100.0}),
                  "version_2_with_negative": 0, "n_best_size": 20, "max_answer_length": 30,
                  "representative_steps": 8, "eval_threads": 1, "latency_runs": 2}
    return inputs, outputs, properties


def test_executor_records_every_variant_in_ml_metadata_properties_and_blesses_the_push(executor_inputs):
    inputs, outputs, properties = executor_inputs
    component.TFLiteExporterExecutor().Do(inputs, outputs, properties)
    exported, blessing = outputs["exported_model"][0], outputs["blessing"][0]
    assert exported.get_string_custom_property("variants") == "dynamic,int8"
    for variant in ("dynamic", "int8"):
        assert exported.get_int_custom_property(f"{variant}_size_bytes") > 100_000
        assert exported.get_float_custom_property(f"{variant}_latency_ms_1_thread") > 0
        assert exported.get_float_custom_property(f"{variant}_latency_ms_2_threads") > 0
        assert exported.get_int_custom_property(f"{variant}_task_library_ok") == 1
        assert 0 <= exported.get_float_custom_property(f"{variant}_f1") <= 100
        # No evaluation input: the exporter scored the SavedModel itself, so float drops are ~0.
        drop = exported.get_float_custom_property("saved_model_f1") - exported.get_float_custom_property(
            f"{variant}_f1")
        assert exported.get_float_custom_property(f"{variant}_f1_drop") == pytest.approx(drop)
    assert exported.get_int_custom_property("dynamic_blessed") == 1
    assert exported.get_string_custom_property("pushed_variants") == "dynamic,int8"
    assert exported.get_string_custom_property("quantization") == "dynamic"
    assert exported.get_string_custom_property("push_reason").startswith("model.tflite is dynamic: dynamic is blessed")
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_int_custom_property("blessed_int8") == 1
    assert os.listdir(blessing.uri) == ["BLESSED"]
    assert os.path.isfile(os.path.join(exported.uri, "variants.json"))
    assert sorted(os.listdir(os.path.join(exported.uri, "Format-Serving"))) == [
        "model.tflite", "model_int8.tflite", "model_record.json", "variants.json", "vocab.txt"]


def test_executor_exports_nothing_and_blesses_nothing_for_an_unblessed_saved_model(executor_inputs):
    inputs, outputs, properties = executor_inputs
    inputs["model_blessing"][0].set_int_custom_property("blessed", 0)
    component.TFLiteExporterExecutor().Do(inputs, outputs, properties)
    exported, blessing = outputs["exported_model"][0], outputs["blessing"][0]
    assert exported.get_int_custom_property("exported") == 0
    assert not exported.has_custom_property("saved_model_f1")  # ML Metadata's SQLite refuses NaN
    assert blessing.get_int_custom_property("blessed") == 0
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert not os.path.exists(os.path.join(exported.uri, "Format-Serving"))


def test_nothing_exported_records_no_metrics_and_says_why(tmp_path):
    report = core.not_exported(str(tmp_path), "SquadEvaluator did not bless the SavedModel")
    assert report.saved_model is None and report.variants == () and not report.blessed
    recorded = json.loads((tmp_path / "variants.json").read_text())
    assert recorded["saved_model"] is None and recorded["reason"] == "SquadEvaluator did not bless the SavedModel"
