"""The compiled Kubeflow spec, executed task by task through the TFX v2 entrypoints (tests/kfp_conformance.py).

The kfp-target spec runs as open-source KFP would run it (no ExampleGen driver, no resolver), on the
tiny fixtures with code-word questions added (conftest's learnable_data_dir) and the tiny_random spec,
and is checked for what tests/test_pipeline_e2e.py checks of the LocalDagRunner run, the pushed
model's right answers included. The Vertex-target spec's SquadExampleGen task runs with its driver hook.
"""

import dataclasses
import json
import os
import pathlib
import time

import kfp_conformance
import pytest
import test_pipeline_e2e
from variant_checks import assert_every_variant_has_its_figures

import kubeflow_runner
from bertqa.model import model_cache
from components.tflite_exporter import core as exporter_core

# As test_pipeline_e2e.py's run: 120 steps, so that the pushed model answers the code-word questions.
TINY_ARGS = ["--train-pattern", "tiny_train.json", "--eval-pattern", "tiny_eval.json", "--spec", "tiny_random",
             "--min-f1", "0", "--train-steps", "120",
             # TFX's Tuner task too: one short trial, whose values the Trainer task takes.
             "--tune", "--tune-trials", "1", "--tune-minutes", "1"]
# Every variant, each allowed any F1 drop, so that all four are exported, scored and pushed.
VARIANTS = ["--quantization", "all", *[arg for v in exporter_core.VARIANTS for arg in ("--max-f1-drop", f"{v}=100")]]
TASKS = ["SquadExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "BertQATransform", "Tuner", "Trainer",
         "SquadEvaluator", "TFLiteExporter", "Pusher", "RunReporter"]


def _compile(tmp, data_dir, target):
    output = str(tmp / ("pipeline.yaml" if target == "kfp" else "pipeline.json"))
    assert kubeflow_runner.main([
        "--target", target, "--pipeline-root", str(tmp / "root"), "--data-root", str(data_dir),
        "--serving-dir", str(tmp / "serving"), "--image", "bertqa-tfx:test", "--output", output,
        # This machine's model cache stands in for the image's.
        "--model-cache-dir", str(model_cache.cache_root()), *TINY_ARGS, *VARIANTS]) == 0
    return output


@dataclasses.dataclass
class Outcome:
    spec: dict
    results: dict
    tmp: pathlib.Path
    failure: tuple[str, str] | None  # (task, message) of the first task that failed


@pytest.fixture(scope="module")
def kfp_run(tmp_path_factory, learnable_data_dir) -> Outcome:
    tmp = tmp_path_factory.mktemp("kfp")
    spec = kfp_conformance.load_spec(_compile(tmp, learnable_data_dir, "kfp"))
    run = kfp_conformance.Run(spec, tmp / "root", tmp / "work", run_driver=False)
    started, failure = time.monotonic(), None
    for name in kfp_conformance.task_order(spec):
        try:
            run.run_task(name)
        except kfp_conformance.ConformanceError as error:
            failure = (name, str(error))
            break
    seconds = {name: round(r.seconds, 1) for name, r in run.results.items()}
    print(f"\nconformance run of the kfp-target spec: {time.monotonic() - started:.0f} s; per task: {seconds}")
    return Outcome(spec, run.results, tmp, failure)


def _through(outcome: Outcome, task: str) -> dict:
    """The results, when `task` ran; otherwise the failure that stopped the run before it."""
    if task in outcome.results:
        return outcome.results
    assert outcome.failure is not None, f"{task} did not run"
    name, message = outcome.failure
    pytest.fail(f"task {name} failed, so {task} did not run:\n{message}")


def _metadata(outcome, task, key):
    return _through(outcome, task)[task].output_artifact(key)["metadata"]


@pytest.mark.e2e
def test_every_task_of_the_spec_ran_in_dependency_order(kfp_run):
    results = _through(kfp_run, "RunReporter")
    assert sorted(results) == sorted(TASKS)
    order = list(results)
    for name, result in results.items():
        assert result.driver_output is None  # open-source KFP runs no lifecycle hook
        for upstream in kfp_run.spec["root"]["dag"]["tasks"][name].get("dependentTasks", []):
            assert order.index(upstream) < order.index(name)


@pytest.mark.e2e
def test_the_tuner_task_runs_and_the_trainer_task_trains_with_its_best_hyperparameters(kfp_run):
    results = _through(kfp_run, "Trainer")
    best_dir = results["Tuner"].output_artifact("best_hyperparameters")["uri"]
    best = json.loads(pathlib.Path(best_dir, "best_hyperparameters.txt").read_text())
    trials = json.loads(pathlib.Path(results["Tuner"].output_artifact("tuner_results")["uri"],
                                     "tuner_results.json").read_text())
    assert len(trials) == 1 and trials[0]["score"] > 0
    model_dir = results["Trainer"].output_artifact("model")["uri"]
    summary = json.loads(pathlib.Path(model_dir, "training_summary.json").read_text())
    assert summary["hyperparameters"] == best["values"] and summary["steps_trained"] == 120


@pytest.mark.e2e
def test_example_gen_without_driver_records_splits_counts_span_and_fingerprint(kfp_run):
    results = _through(kfp_run, "BertQATransform")
    examples = results["SquadExampleGen"].output_artifact("examples")
    metadata = examples["metadata"]
    assert json.loads(metadata["split_names"]) == ["train", "eval"]
    report = json.loads(pathlib.Path(examples["uri"], "data_report.json").read_text())["total"]
    train_questions = test_pipeline_e2e.TRAIN_QUESTIONS
    assert report["questions_in"] == report["kept"] + sum(report["dropped"].values()) == train_questions + 23
    # What TFX's driver would have recorded, computed by the executor because no driver ran.
    assert metadata.get("span", metadata.get("custom:span")) == 0
    assert "split:train,num_files:1" in metadata["input_fingerprint"]
    windows = results["BertQATransform"].output_artifact("transformed_examples")
    window_report = json.loads(pathlib.Path(windows["uri"], "window_report.json").read_text())
    assert window_report["train"]["questions"] == train_questions and window_report["eval"]["questions"] == 23


@pytest.mark.e2e
def test_evaluator_metrics_and_blessing_reach_the_downstream_tasks(kfp_run):
    evaluation = _metadata(kfp_run, "SquadEvaluator", "evaluation")
    assert 0.0 <= evaluation["exact_match"] <= evaluation["f1"] <= 100.0
    assert _metadata(kfp_run, "SquadEvaluator", "blessing")["blessed"] == 1
    # The exporter received the evaluator's blessing with its metadata, as KFP passes it on.
    exporter_inputs = _through(kfp_run, "TFLiteExporter")["TFLiteExporter"].executor_input["inputs"]
    (blessing_in,) = exporter_inputs["artifacts"]["model_blessing"]["artifacts"]
    assert blessing_in["metadata"]["blessed"] == 1


@pytest.mark.e2e
def test_every_tflite_variant_has_its_figures(kfp_run):
    props = _metadata(kfp_run, "TFLiteExporter", "exported_model")
    evaluation = _metadata(kfp_run, "SquadEvaluator", "evaluation")
    assert props["saved_model_f1"] == pytest.approx(evaluation["f1"])
    assert_every_variant_has_its_figures(props)
    assert all(props[f"{variant}_blessed"] == 1 for variant in exporter_core.VARIANTS)
    assert _metadata(kfp_run, "TFLiteExporter", "blessing")["blessed"] == 1


@pytest.fixture(scope="module")
def pushed_tflite(kfp_run) -> pathlib.Path:
    tmp = kfp_run.tmp
    pushed = _metadata(kfp_run, "Pusher", "pushed_model")
    assert pushed["pushed"] == 1
    (version,) = os.listdir(tmp / "serving")
    assert pathlib.Path(pushed["pushed_destination"]) == tmp / "serving" / version
    return tmp / "serving" / version / "model.tflite"


@pytest.mark.e2e
def test_pusher_ships_model_tflite_vocab_and_every_blessed_variant(pushed_tflite):
    assert pushed_tflite.stat().st_size > 100_000
    assert (pushed_tflite.parent / "vocab.txt").is_file()
    shipped = {p.name for p in pushed_tflite.parent.glob("*.tflite")}
    assert len(shipped) == len(exporter_core.VARIANTS) and "model.tflite" in shipped


@pytest.mark.e2e
def test_task_library_answers_with_the_pushed_model(pushed_tflite):
    """The same check as of the LocalDagRunner run's pushed model: the code word of contexts it never saw."""
    test_pipeline_e2e.test_task_library_answers_with_the_pushed_model(pushed_tflite)


@pytest.mark.e2e
def test_vertex_spec_runs_the_example_gen_driver_and_its_output_reaches_the_executor(
        kfp_run, tmp_path_factory, learnable_data_dir):
    tmp = tmp_path_factory.mktemp("vertex")
    results = kfp_conformance.run_spec(_compile(tmp, learnable_data_dir, "vertex"), tmp / "root", tmp / "work",
                                       run_driver=True, tasks=["SquadExampleGen"])
    result = results["SquadExampleGen"]
    driver = result.driver_output["parameterValues"]
    assert driver["span"] == 0 and "split:train,num_files:1" in driver["input_fingerprint"]
    # Folded into the schema 2.0 executor's `parameters`.
    folded = result.executor_input["inputs"]["parameters"]
    assert folded["input_fingerprint"] == {"stringValue": driver["input_fingerprint"]}
    assert folded["span"] == {"intValue": "0"}
    metadata = result.output_artifact("examples")["metadata"]
    assert metadata["input_fingerprint"] == driver["input_fingerprint"]
    # The same fingerprint as the executor computed alone in the kfp-target run.
    kfp_examples = _metadata(kfp_run, "SquadExampleGen", "examples")
    assert metadata["input_fingerprint"] == kfp_examples["input_fingerprint"]


# The runner's own rules, on small hand-written specs (no task runs).

def _spec(tasks, schema="2.1.0", root_inputs=None):
    return {"schemaVersion": schema, "root": {"dag": {"tasks": tasks},
                                              "inputDefinitions": {"parameters": root_inputs or {}}}}


def test_runner_orders_by_dependent_tasks_and_refuses_cycles():
    spec = _spec({"c": {"dependentTasks": ["b"]}, "b": {"dependentTasks": ["a"]}, "a": {}})
    assert kfp_conformance.task_order(spec) == ["a", "b", "c"]
    with pytest.raises(kfp_conformance.ConformanceError, match="cycle"):
        kfp_conformance.task_order(_spec({"a": {"dependentTasks": ["b"]}, "b": {"dependentTasks": ["a"]}}))
    with pytest.raises(kfp_conformance.ConformanceError, match="unknown"):
        kfp_conformance.task_order(_spec({"a": {"dependentTasks": ["z"]}}))


def test_runner_reads_parameters_as_the_schema_says():
    task = {"inputs": {"parameters": {"n": {"runtimeValue": {"constant": 3.0}},
                                      "root": {"componentInputParameter": "data_root"}}}}
    spec = _spec({"t": task}, root_inputs={"data_root": {"parameterType": "STRING", "defaultValue": "/d"}})
    assert kfp_conformance.parameter_inputs(spec, "t", {}) == {"parameterValues": {"n": 3.0, "root": "/d"}}
    assert kfp_conformance.parameter_inputs(spec, "t", {"data_root": "/e"})["parameterValues"]["root"] == "/e"
    # Schema 2.1 with the 2.0 form: open-source KFP would pass no value, so the runner refuses it.
    legacy = {"inputs": {"parameters": {"n": {"runtimeValue": {"constantValue": {"intValue": "3"}}}}}}
    with pytest.raises(kfp_conformance.ConformanceError, match="only runtimeValue.constant"):
        kfp_conformance.parameter_inputs(_spec({"t": legacy}), "t", {})
    assert kfp_conformance.parameter_inputs(_spec({"t": legacy}, "2.0.0"), "t", {}) == {
        "parameters": {"n": {"intValue": "3"}}}
    no_default = _spec({"t": {"inputs": {"parameters": {"p": {"componentInputParameter": "x"}}}}})
    with pytest.raises(kfp_conformance.ConformanceError, match="no value and no default"):
        kfp_conformance.parameter_inputs(no_default, "t", {})


@pytest.mark.e2e
def test_run_report_is_written_into_its_uri_and_beside_the_pushed_model(kfp_run, pushed_tflite):
    report = _through(kfp_run, "RunReporter")["RunReporter"].output_artifact("report")
    page = pathlib.Path(report["uri"], "report.html")
    assert report["metadata"]["report"] == str(page)
    assert 'id="variant-table"' in page.read_text() and 'id="training-curve"' in page.read_text()
    assert (pushed_tflite.parent / "report.html").read_text() == page.read_text()
    assert report["metadata"]["questions"] == 23
