"""TFLiteExporter inside the real pipeline: every variant recorded in ML Metadata, only blessed ones pushed,
and the push rule's fallback when the dynamic-range variant misses its limit.

LocalDagRunner on the tiny fixtures and the tiny_random spec, as tests/test_pipeline_e2e.py
runs it, asked for the dynamic, float32 and int8 variants. So that the verdicts do not depend
on how a 2-layer model trained for two epochs happens to round, the SavedModel's F1 read from
SquadEvaluator's artifact is raised by 50 points: every variant then drops about 50, which
dynamic's limit here (0) refuses and the others' limits (100) accept. The push rule then
exports float16, the next variant of its order, and pushes it as model.tflite.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
from variant_checks import assert_every_variant_has_its_figures

import local_runner
from bertqa.operations import metadata_store
from components.tflite_exporter import core

pytestmark = pytest.mark.e2e

TINY_ARGS = ["--train-pattern", "tiny_train.json", "--eval-pattern", "tiny_eval.json", "--spec", "tiny_random",
             "--min-f1", "0", "--epochs", "2"]
LIMITS = ["--max-f1-drop", "none=100", "--max-f1-drop", "dynamic=0", "--max-f1-drop", "int8=100",
          "--max-f1-drop", "float16=100"]
ASKED = ("dynamic", "none", "int8")  # float16 is exported by the push rule, after them
RAISED = 50.0


def _run(runs_dir, fixtures_dir, *extra):
    args = ["--runs-dir", str(runs_dir), "--data-dir", str(fixtures_dir), *TINY_ARGS, *extra]
    code = local_runner.main(args)
    return code, local_runner.build_config(local_runner.parse_args(args))


def _exporter_outputs(store):
    def produced(type_name):
        return [a for a in store.get_artifacts_by_type(type_name)
                if metadata_store.producer_component(store, a.id) == "TFLiteExporter"]
    return produced("Model"), produced("ModelBlessing")


@pytest.fixture(scope="module")
def all_variants_run(tmp_path_factory, fixtures_dir):
    runs_dir = tmp_path_factory.mktemp("runs")
    read = core.read_reference

    def raised(directory, eval_config):
        metrics, eval_config = read(directory, eval_config)
        return core.Metrics(metrics.exact_match, metrics.f1 + RAISED), eval_config

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core, "read_reference", raised)
        code, config = _run(runs_dir, fixtures_dir, "--quantization", ",".join(ASKED), *LIMITS)
    assert code == 0
    return config, metadata_store.sqlite_store(local_runner.metadata_path(config))


def test_every_variant_is_recorded_as_custom_properties_in_ml_metadata(all_variants_run):
    _, store = all_variants_run
    (exported,), _ = _exporter_outputs(store)
    props = metadata_store.custom_properties(exported)
    assert_every_variant_has_its_figures(props)
    assert props["variants"] == "dynamic,none,int8,float16"
    assert props["float16_blessed"] == 1 and props["dynamic_blessed"] == 0
    # The reference is SquadEvaluator's own F1 for the SavedModel (raised by the test).
    evaluation = metadata_store.custom_properties(metadata_store.latest_artifact(store, "ModelEvaluation"))
    assert props["saved_model_f1"] == pytest.approx(evaluation["f1"] + RAISED)


def test_push_rule_pushes_float16_as_model_tflite_when_dynamic_misses_its_limit(all_variants_run):
    config, store = all_variants_run
    (exported,), (blessing,) = _exporter_outputs(store)
    assert metadata_store.custom_properties(blessing)["blessed"] == 1
    props = metadata_store.custom_properties(exported)
    assert props["quantization"] == "float16" and props["size_bytes"] == props["float16_size_bytes"]
    assert props["push_reason"].startswith("model.tflite is float16: dynamic is not (F1 drop")
    (version,) = os.listdir(config.serving_dir)
    pushed = sorted(os.listdir(os.path.join(config.serving_dir, version)))
    assert pushed == ["model.tflite", "model_float32.tflite", "model_int8.tflite", "model_record.json", "report.html",
                      "variants.json", "vocab.txt"]
    assert os.path.getsize(os.path.join(config.serving_dir, version, "model.tflite")) == props["float16_size_bytes"]
    recorded = json.loads(pathlib.Path(config.serving_dir, version, "variants.json").read_text())
    assert recorded["pushed_variants"] == ["none", "int8", "float16"] and recorded["pushed_variant"] == "float16"
    assert recorded["push_reason"] == props["push_reason"]
    record = json.loads(pathlib.Path(config.serving_dir, version, "model_record.json").read_text())
    assert set(record["variants"]) == {"none", "int8", "float16"}


def test_push_order_and_task_library_f1_are_read_from_the_command_line_and_all_is_refused(capsys):
    args = local_runner.parse_args(["--push-order", "float16,dynamic", "--task-library-f1"])
    config = local_runner.build_config(args)
    assert config.tflite_push_order == ("float16", "dynamic") and config.tflite_task_library_f1
    assert local_runner.build_config(local_runner.parse_args([])).tflite_push_order == core.DEFAULT_PUSH_ORDER
    for bad in ("all", "dynamic,int4", "dynamic,dynamic"):
        with pytest.raises(SystemExit):
            local_runner.parse_args(["--push-order", bad])
        assert "--push-order" in capsys.readouterr().err


def test_a_failing_exporter_leaves_nothing_blessed_or_pushed(tmp_path, fixtures_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(core, "export_variants", fail)
    with pytest.raises(Exception, match="conversion failed"):
        _run(tmp_path / "runs", fixtures_dir, "--max-f1-drop", "dynamic=100")
    store = metadata_store.sqlite_store(str(tmp_path / "runs" / "bertqa" / "metadata.sqlite"))
    exported, blessings = _exporter_outputs(store)
    assert not [b for b in blessings if metadata_store.custom_properties(b).get("blessed")]
    assert not [a for a in store.get_artifacts_by_type("PushedModel")
                if metadata_store.custom_properties(a).get("pushed")]
    assert not (tmp_path / "runs" / "bertqa" / "serving").exists()


def test_a_saved_model_the_evaluator_did_not_bless_is_neither_exported_nor_pushed(tmp_path, fixtures_dir):
    code, config = _run(tmp_path / "runs", fixtures_dir, "--min-f1", "100")
    assert code == 0
    store = metadata_store.sqlite_store(local_runner.metadata_path(config))
    (exported,), (blessing,) = _exporter_outputs(store)
    assert metadata_store.custom_properties(exported)["exported"] == 0
    assert metadata_store.custom_properties(blessing)["blessed"] == 0
    assert not os.path.exists(config.serving_dir)
    assert "pushed: nothing" in local_runner.summary(config)
