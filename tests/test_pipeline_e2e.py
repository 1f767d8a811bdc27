"""The whole pipeline, for real: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata, tiny data and model.

The run trains on the tiny fixtures with code-word questions added (conftest's learnable_data_dir,
tests/synthetic_spans.py), long enough that the pushed model answers them right.
"""

import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2
from synthetic_spans import CODE_WORD_QUESTIONS, assert_answers_code_words

import bertqa_cli as cli
import local_runner
from bertqa.on_device import runtime, task_library
from bertqa.operations import metadata_store

pytestmark = pytest.mark.e2e

# 120 steps: three times what the tiny model needs to answer the code-word questions (synthetic_spans.py).
TINY_ARGS = ["--train-pattern", "tiny_train.json", "--eval-pattern", "tiny_eval.json", "--spec", "tiny_random",
             "--min-f1", "0", "--train-steps", "120", "--task-library-f1"]
TRAIN_QUESTIONS = 15 + CODE_WORD_QUESTIONS
# The base-model fixture's second call at 0.9 of the first's rate: at the default half, the tiny model learns
# too little in its first logged steps for the warm-start bound below (1.96 against a cold 3.88 / 2).
LATER_RATE_SCALE = 0.9


def _run(runs_dir, data_dir, *extra):
    args = ["--runs-dir", str(runs_dir), "--data-dir", str(data_dir), *TINY_ARGS, *extra]
    code = local_runner.main(args)
    return code, local_runner.build_config(local_runner.parse_args(args))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, learnable_data_dir):
    runs_dir = tmp_path_factory.mktemp("runs")
    code, config = _run(runs_dir, learnable_data_dir)
    assert code == 0
    return config, runs_dir


@pytest.fixture(scope="module")
def store(first_run):
    return metadata_store.sqlite_store(local_runner.metadata_path(first_run[0]))


@pytest.fixture(scope="module")
def pushed_tflite(first_run) -> pathlib.Path:
    config = first_run[0]
    (version,) = os.listdir(config.serving_dir)
    return pathlib.Path(config.serving_dir, version, "model.tflite")


def test_blessed_model_tflite_and_vocab_are_pushed(pushed_tflite):
    assert pushed_tflite.stat().st_size > 100_000
    assert (pushed_tflite.parent / "vocab.txt").is_file()


def test_pushed_model_tflite_is_static_so_xnnpack_runs_it(pushed_tflite):
    # One dynamic-sized tensor and TFLite keeps XNNPACK (the CPU delegate phones use) off the
    # whole model; the report loads the pushed file with the interpreter's default XNNPACK.
    report = runtime.xnnpack_report(str(pushed_tflite))
    assert report.dynamic_tensors == (), report.summary()
    assert report.partitions >= 1 and report.delegated > report.nodes // 2, report.summary()


def test_pushed_file_has_one_signature_for_each_window_length_of_the_spec(pushed_tflite):
    # tiny_random's on_device_lengths (384, 192), through the Trainer's SavedModel to the exporter.
    interpreter = runtime.open_interpreter(str(pushed_tflite))
    assert sorted(runtime.signature_runners(interpreter)) == [192, 384]
    assert list(interpreter.get_signature_list())[0] == "seq_384"


def test_blessing_and_metrics_are_recorded_in_ml_metadata(store):
    blessing = metadata_store.custom_properties(metadata_store.latest_artifact(store, "ModelBlessing"))
    assert blessing["blessed"] == 1
    evaluation = metadata_store.custom_properties(metadata_store.latest_artifact(store, "ModelEvaluation"))
    assert 0.0 <= evaluation["exact_match"] <= evaluation["f1"] <= 100.0


def test_lineage_links_the_tflite_back_to_the_example_gen_output(store):
    tflite = next(a for a in store.get_artifacts_by_type("Model")
                  if metadata_store.producer_component(store, a.id) == "TFLiteExporter")
    upstream = store.get_artifacts_by_id(sorted(metadata_store.upstream_artifact_ids(store, tflite.id)))
    producers = {metadata_store.producer_component(store, a.id) for a in upstream}
    assert {"SquadExampleGen", "BertQATransform", "Trainer", "SquadEvaluator"} <= producers
    assert any(a.type == "Examples" and metadata_store.producer_component(store, a.id) == "SquadExampleGen"
               for a in [_with_type(store, a) for a in upstream])


def _with_type(store, artifact):
    (artifact_type,) = store.get_artifact_types_by_id([artifact.type_id])
    artifact.type = artifact_type.name
    return artifact


def test_data_and_window_reports_count_every_question(first_run):
    config = first_run[0]
    examples_dir = next(pathlib.Path(config.pipeline_root, "SquadExampleGen", "examples").iterdir())
    report = json.loads((examples_dir / "data_report.json").read_text())["total"]
    assert report["questions_in"] == report["kept"] + sum(report["dropped"].values()) == TRAIN_QUESTIONS + 23
    windows_dir = next(pathlib.Path(config.pipeline_root, "BertQATransform", "transformed_examples").iterdir())
    window_report = json.loads((windows_dir / "window_report.json").read_text())
    assert window_report["train"]["questions"] == TRAIN_QUESTIONS and window_report["eval"]["questions"] == 23


def test_task_library_answers_with_the_pushed_model(pushed_tflite):
    """The pushed model.tflite, through the Task Library, gives the code word of contexts it never saw."""
    answerer = task_library.create_question_answerer(str(pushed_tflite))

    def best(context, question):
        answers = task_library.answers_from(answerer, context, question, top_k=3)
        return answers[0][0] if answers else None

    assert_answers_code_words(best)


def test_predict_command_answers_with_tflite_and_saved_model(first_run, pushed_tflite, capsys):
    """`bertqa predict --json` gives the code word: the pushed .tflite in LiteRT (the default) and in the
    Task Library, and the Trainer's SavedModel."""
    config = first_run[0]
    saved_model = next(pathlib.Path(config.pipeline_root, "Trainer", "model").iterdir()) / "Format-Serving"
    for model, options in ((str(pushed_tflite), []), (str(pushed_tflite), ["--runtime", "task-library"]),
                           (str(saved_model), [])):

        def best(context, question, model=model, options=options):
            argv = ["predict", "--model", model, "--context", context, "--question", question, "--json", *options]
            assert cli.main(argv) == 0
            answers = json.loads(capsys.readouterr().out)["answers"]
            return answers[0]["text"] if answers else None

        assert_answers_code_words(best)


def test_litert_and_the_task_library_give_the_same_answers_with_the_pushed_model(pushed_tflite, learnable_data_dir):
    """On a probe set (the eval split's questions and the unseen code-word contexts), the pushed file in
    LiteRT, with this project's tokenizer and span decoding, answers as the Task Library does."""
    from synthetic_spans import QUESTION, UNSEEN

    from bertqa.data import squad_io
    from bertqa.on_device.litert_answerer import LiteRtAnswerer

    examples, _ = squad_io.read_squad_file(str(learnable_data_dir / "tiny_eval.json"), squad_io.SquadReadConfig())
    probes = [(e.context, e.question) for e in examples] + [(context, QUESTION) for context, _ in UNSEEN]
    litert = LiteRtAnswerer(str(pushed_tflite))
    answerer = task_library.create_question_answerer(str(pushed_tflite))

    def words(answers):  # the Task Library returns whole words of the context, with their punctuation
        return " ".join(answers[0][0].split()).strip(".,;:!?\"'") if answers else ""

    pairs = [(words(litert.answer(c, q)), words(task_library.answers_from(answerer, c, q))) for c, q in probes]
    assert [lite for lite, _ in pairs[-len(UNSEEN):]] == [word for _, word in UNSEEN], pairs[-len(UNSEEN):]
    # Two empty answers are no agreement: a file that answered nothing would pass otherwise.
    agreed = sum(bool(lite) and lite == library for lite, library in pairs)
    # Tokenizers agree on this text; what may differ is a span's edge where the Task Library keeps
    # whole words: at least 90% of the probes get the same non-empty answer from both runtimes.
    assert agreed >= 0.9 * len(pairs), [p for p in pairs if p[0] != p[1]]


def test_exporter_scores_the_pushed_file_in_the_task_library_too(store, first_run, pushed_tflite, learnable_data_dir):
    """--task-library-f1: the exporter answers every eval question in the Task Library, records its F1
    beside LiteRT's, and how often the two runtimes give the same answer; the summary shows both."""
    from bertqa.data import squad_io
    from bertqa.model import evaluation, squad_metrics
    from bertqa.on_device import scoring
    from bertqa.on_device.litert_answerer import LiteRtAnswerer

    exports = [a for a in store.get_artifacts_by_type("Model")
               if metadata_store.producer_component(store, a.id) == "TFLiteExporter"]
    props = metadata_store.custom_properties(max(exports, key=lambda a: a.id))
    assert props["quantization"] == "dynamic"  # so the pushed model.tflite is the file it scored
    # Counted only where both runtimes gave the same non-empty answer (scoring.answer_agreement).
    assert props["dynamic_task_library_agreement"] >= 0.9
    assert 0.0 <= props["dynamic_task_library_exact_match"] <= props["dynamic_task_library_f1"] <= 100.0

    # The tiny model scores near 0 on these 23 questions, so F1 against the gold answers says little
    # on its own; what the Task Library answered is compared with what LiteRT answered instead.
    examples, _ = squad_io.read_squad_file(str(learnable_data_dir / "tiny_eval.json"), squad_io.SquadReadConfig())
    in_library = scoring.evaluate_with_task_library(str(pushed_tflite), examples, evaluation.EvalConfig(),
                                                    show_progress=False)
    assert props["dynamic_task_library_f1"] == pytest.approx(in_library.metrics["f1"])  # the same file and questions
    library = in_library.predictions.answers
    litert = LiteRtAnswerer(str(pushed_tflite))
    lite = {e.id: next(iter(litert.answer(e.context, e.question)), ("",))[0] for e in examples}
    answered = [e.id for e in examples if squad_metrics.normalize_answer(library[e.id])]
    assert len(answered) >= 0.9 * len(examples), library
    differ = [e.id for e in examples if not squad_metrics.exact_match(library[e.id], lite[e.id])]
    assert len(differ) <= 0.1 * len(examples), {i: (library[i], lite[i]) for i in differ}
    # A question is worth at most 100/23 points of F1, and questions answered alike score alike:
    # the two F1s differ by no more than the questions the runtimes answered differently.
    litert_f1 = squad_metrics.squad_v1_metrics(examples, lite)["f1"]
    assert abs(in_library.metrics["f1"] - litert_f1) <= 100.0 * len(differ) / len(examples) + 1e-9
    (line,) = [line for line in local_runner.summary(first_run[0]).splitlines() if line.startswith("tflite dynamic")]
    assert f"f1 {props['dynamic_task_library_f1']:.2f} in it (answers as LiteRT for" in line, line


def test_pushed_model_tflite_runs_in_litert_all_on_xnnpack(pushed_tflite):
    """LiteRT (what apps run today) delegates every op of the pushed file to XNNPACK but the embedding
    lookups and the index arithmetic on the int32 inputs; anything else outside is named."""
    report = runtime.xnnpack_report(str(pushed_tflite), runtime.LITERT)
    assert report.dynamic_tensors == () and report.partitions >= 1, report.summary()
    # GREATER_EQUAL, CUMSUM, SUB: the position ids counted from the input ids (bertqa.model.modeling).
    unexpected = set(dict(report.outside)) - {"GATHER", "STRIDED_SLICE", "CAST", "GREATER_EQUAL", "CUMSUM", "SUB"}
    assert not unexpected, f"ops outside LiteRT's XNNPACK: {sorted(unexpected)} ({report.summary()})"


def test_second_run_reuses_every_component_from_the_cache(first_run, learnable_data_dir):
    config, runs_dir = first_run
    code, _ = _run(runs_dir, learnable_data_dir)
    assert code == 0
    store = metadata_store.sqlite_store(local_runner.metadata_path(config))
    executions = sorted(store.get_executions(), key=lambda e: e.id)
    second = executions[len(executions) // 2:]
    assert len(executions) % 2 == 0
    # Speed is not asserted here: docs/make-run.md gives the cached re-run's time and its command.
    assert all(e.last_known_state == metadata_store_pb2.Execution.CACHED for e in second)


def test_trainer_writes_tensorboard_logs_with_the_loss_series(first_run):
    from bertqa.operations import report_data

    config = first_run[0]
    model_run = next(pathlib.Path(config.pipeline_root, "Trainer", "model_run").iterdir())
    assert list((model_run / "train").glob("events.out.tfevents.*"))
    curve = report_data.read_training_curve(str(model_run))
    summary = _training_summary(config)
    assert curve and curve[-1].step == summary["steps"]
    assert all(point.loss > 0 and point.learning_rate >= 0 and point.windows_per_second > 0 for point in curve)


def _training_summary(config_or_model_dir) -> dict:
    """training_summary.json of a run's only Trainer execution, or of the Trainer model directory given."""
    model_dir = (config_or_model_dir if isinstance(config_or_model_dir, pathlib.Path)
                 else _only(config_or_model_dir.pipeline_root))
    return json.loads((model_dir / "training_summary.json").read_text())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's opt-in is for x86 CPUs")
def test_the_trainer_runs_onednn_kernels_even_when_the_user_environment_does_not_ask(first_run):
    # TensorFlow 2.16 turns oneDNN on by itself only from AVX512-VNNI up; the runners ask for it on every x86 CPU.
    assert _training_summary(first_run[0])["onednn"] is True
    environment = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    probe = "import local_runner\nfrom components.trainer import phases\nprint(phases.onednn_enabled())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=pathlib.Path(local_runner.__file__).parent,
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "True"


def test_trainer_trains_and_exports_each_in_a_process_of_its_own(first_run):
    # The pipeline runs in this process (local_runner.main); the Trainer's two phases must not.
    process_ids = _training_summary(first_run[0])["process_ids"]
    assert set(process_ids) == {"train", "export"}
    assert os.getpid() not in process_ids.values()
    assert process_ids["train"] != process_ids["export"]


def test_trainer_phases_fail_clearly_and_a_kill_between_them_leaves_only_the_export(first_run, tmp_path):
    from bertqa.model import model_spec
    from components.trainer import child_process
    from components.trainer import phases as trainer_phases

    config = first_run[0]
    root = pathlib.Path(config.pipeline_root, "BertQATransform")
    model_dir = tmp_path / "Trainer" / "model" / "2"
    job = trainer_phases.TrainingJob(
        train_files=tuple(sorted(str(p) for p in root.glob("transformed_examples/*/Split-train/*"))),
        transform_output=str(next(root.glob("transform_graph/*"))),
        serving_model_dir=str(model_dir / "Format-Serving"),
        model_run_dir=str(tmp_path / "Trainer" / "model_run" / "2"), train_steps=3,
        custom_config={"model_spec": model_spec.to_json(config.spec), "batch_size": 4})
    assert job.train_files

    with pytest.raises(child_process.TrainerProcessError,
                       match="export process exited with code 1: RuntimeError: the training process left no"):
        child_process.run_phase("export", job)

    child_process.run_phase("train", job)
    (trained_file,) = (tmp_path / "Trainer" / trainer_phases.CHECKPOINTS_SUBDIR).glob(
        f"*/{trainer_phases.TRAINED_FILE}")
    trained = json.loads(trained_file.read_text())
    assert trained["steps_trained"] == 3
    # The pipeline killed after the training's process ended: the rerun's training process finds
    # the finished training and leaves it as it is.
    child_process.run_phase("train", job)
    assert json.loads(trained_file.read_text()) == trained
    child_process.run_phase("export", job)
    summary = json.loads((model_dir / trainer_phases.TRAINING_SUMMARY_FILE).read_text())
    assert summary["process_ids"]["train"] == trained["process_ids"]["train"]
    assert summary["steps_trained"] == 3
    assert (model_dir / "Format-Serving" / "saved_model.pb").exists()
    assert not trained_file.parent.exists()


@pytest.fixture(scope="module")
def report_path(store) -> pathlib.Path:
    report = metadata_store.latest_artifact(store, "bertqa_artifacts.RunReport")
    assert report is not None, "RunReporter recorded no RunReport"
    return pathlib.Path(metadata_store.custom_properties(report)["report"])


def _non_blank_fraction(png: bytes) -> float:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    dark = sum(1 for value in image.getdata() if value < 200)
    return dark / (image.width * image.height)


def test_run_report_shows_metrics_variants_and_plots_in_chromium(report_path, store, tmp_path):
    import browser

    evaluation = metadata_store.custom_properties(metadata_store.latest_artifact(store, "ModelEvaluation"))

    def look(page):
        return {"headline": page.inner_text("#headline"),
                "variants": page.inner_text("#variant-table"),
                "slices": page.inner_text("#slice-tables"),
                "images": {image_id: (page.evaluate(f"document.getElementById('{image_id}').naturalWidth"),
                                      page.locator(f"#{image_id}").screenshot())
                           for image_id in ("training-curve", "variant-plot", "slice-plot")}}

    seen = browser.render(str(report_path), str(tmp_path / "report.png"), look)
    assert f"F1 {evaluation['f1']:.2f}" in seen["headline"]
    assert f"EM {evaluation['exact_match']:.2f}" in seen["headline"]
    assert "dynamic" in seen["variants"] and "By question word" in seen["slices"]
    for image_id, (natural_width, png) in seen["images"].items():
        assert natural_width > 100, image_id  # the inline PNG decoded
        assert _non_blank_fraction(png) > 0.01, image_id
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_report_sits_beside_the_pushed_model_and_the_report_command_rebuilds_it(
        first_run, report_path, pushed_tflite, tmp_path, capsys):
    config = first_run[0]
    assert (pushed_tflite.parent / "report.html").read_text() == report_path.read_text()
    run_dir = os.path.dirname(local_runner.metadata_path(config))
    assert cli.main(["report", run_dir, "--output-dir", str(tmp_path)]) == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out
    assert ((tmp_path / "sliced_metrics.json").read_text()
            == (report_path.parent / "sliced_metrics.json").read_text())
    sliced = json.loads((tmp_path / "sliced_metrics.json").read_text())
    assert sliced["overall"]["count"] == 23
    assert sum(row["count"] for row in sliced["slices"]["question word"]) == 23


def _assert_nothing_blessed_or_pushed(runs_dir):
    metadata_file = runs_dir / "bertqa" / "metadata.sqlite"
    if metadata_file.exists():
        store = metadata_store.sqlite_store(str(metadata_file))
        assert not store.get_artifacts_by_type("ModelBlessing")
        assert not store.get_artifacts_by_type("PushedModel")
    assert not (runs_dir / "bertqa" / "serving").exists()


@pytest.mark.parametrize(("content", "problem"), [
    ('{"version": "1.1", "data": [', "invalid JSON"),
    (json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": "Some context.", "qas": [{"id": "q1", "question": "What?", "answers": []}]}]}]}),
     "no answers"),
])
def test_malformed_squad_file_stops_with_one_clear_message(tmp_path, fixtures_dir, capsys, content, problem):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(fixtures_dir / "tiny_train.json", data_dir / "tiny_train.json")
    (data_dir / "tiny_eval.json").write_text(content)
    code, _ = _run(tmp_path / "runs", data_dir)
    assert code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "tiny_eval.json" in error_lines[0] and problem in error_lines[0]
    _assert_nothing_blessed_or_pushed(tmp_path / "runs")


@pytest.fixture(scope="module")
def base_model_calls(learnable_data_dir, tmp_path_factory):
    """Two calls of `bertqa base-model` on one SQuAD file (the learnable tiny data, its eval article's
    first paragraph the eval split and its second the held-out split), 60 steps each; and a third
    call with another file."""
    squad = json.loads((learnable_data_dir / "tiny_train.json").read_text())
    squad["data"] += json.loads((learnable_data_dir / "tiny_eval.json").read_text())["data"]
    squad_file = tmp_path_factory.mktemp("squad") / "squad.json"
    squad_file.write_text(json.dumps(squad))
    runs_dir = tmp_path_factory.mktemp("base")
    args = ["base-model", "--squad-file", str(squad_file), "--hours", "1", "--runs-dir", str(runs_dir),
            "--eval-articles", "1", "--eval-max-paragraphs", "1", *TINY_ARGS[4:8], "--train-steps", "60",
            "--later-rate-scale", str(LATER_RATE_SCALE)]
    codes = [cli.main(args), cli.main(args)]
    other = squad_file.with_name("other.json")
    other.write_text(json.dumps({**squad, "data": squad["data"][1:]}))
    return codes, runs_dir, squad_file, other, args


def test_base_model_calls_resume_where_the_last_stopped_and_a_run_from_the_base_starts_lower(
        base_model_calls, first_run):
    codes, runs_dir, squad_file, _, _ = base_model_calls
    assert codes == [0, 0]
    state = json.loads((runs_dir / "base_model.json").read_text())
    assert state["split"] == {"eval_articles": 1, "eval_max_paragraphs": 1, "train": TRAIN_QUESTIONS,
                              "eval": 15, "heldout": 8}
    first, second = state["calls"]
    assert (first["call"], first["data_batches"], first["initialised_from"]) == (1, [0, 60], None)
    # The second call started from the first one's pushed version and took the window order up at batch 60.
    assert (second["call"], second["data_batches"], second["initialised_from"]) == (2, [60, 120], first["path"])
    assert first["version"] != second["version"]
    assert set(second["heldout"]) == {"saved_model", "model.tflite"}
    assert 0 <= second["heldout"]["model.tflite"]["f1"] <= 100
    first_model, second_model = (_trainer_model_dir(call) for call in (first, second))
    assert _first_logged_loss(second_model) < _first_logged_loss(_only(first_run[0].pipeline_root)) / 2
    assert _training_summary(second_model)["initialised_from"] == {"path": first["path"], "kind": "pushed version"}
    assert _training_summary(first_model)["cold_start_reason"]
    # The second call peaks at --later-rate-scale of the first's rate (tests/test_base_model.py: its default).
    rates = [_training_summary(model)["learning_rate"] for model in (first_model, second_model)]
    assert rates[1] == pytest.approx(rates[0] * LATER_RATE_SCALE)


def test_base_model_refuses_another_squad_file_another_batch_size_tuning_and_the_options_it_sets_itself(
        base_model_calls, capsys):
    _, runs_dir, squad_file, other, args = base_model_calls
    before = (runs_dir / "base_model.json").read_text()
    assert cli.main([*args[:2], str(other), *args[3:]]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert error.startswith(f"error: {runs_dir} holds a base trained on {squad_file}") and str(other) in error
    assert (runs_dir / "base_model.json").read_text() == before
    with pytest.raises(SystemExit):
        cli.main([*args, "--init-from", str(runs_dir)])
    assert "--init-from: set by this command" in capsys.readouterr().err
    # The calls trained the tiny spec's batches of 16; batches of 8 would take the window order up elsewhere.
    assert cli.main([*args, "--batch-size", "8"]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert error == (f"error: {runs_dir} holds a base trained in batches of 16, and this call would train batches "
                     "of 8: its place in the window order is counted in batches of 16; pass --batch-size 16, or "
                     "another --runs-dir for a new base")
    # The Tuner may choose another batch size inside the Trainer, after the call has placed it in the order.
    assert cli.main([*args, "--tune"]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert error.startswith(f"error: {runs_dir} holds a base trained in batches of 16, and --tune may train")
    assert (runs_dir / "base_model.json").read_text() == before


@pytest.fixture(scope="module")
def runs_from_bases(first_run, base_model_calls, learnable_data_dir, tmp_path_factory, vocab_path):
    """Runs that start (--init-from) from a base: the second base-model call, from the first call's pushed
    version; and a run from the first run's weights written as a BERT checkpoint with a span head
    (tests/bert_layout.py). kind -> (the Trainer's model directory, its runs directory, the base)."""
    from bert_layout import write_bert_qa_checkpoint

    from bertqa.model import training
    from bertqa.operations import pushed_models

    config = first_run[0]
    (version,) = os.listdir(config.serving_dir)
    model = training.build_model(config.spec)
    assert training.warm_start(model, pushed_models.read_version(config.serving_dir, version).saved_model_dir) is None
    base = str(write_bert_qa_checkpoint(model, tmp_path_factory.mktemp("bert_qa"), vocab_path))
    runs_dir = tmp_path_factory.mktemp("from_base")
    args = ["--runs-dir", str(runs_dir), "--data-dir", str(learnable_data_dir), *TINY_ARGS[:-1], "--init-from", base]
    assert local_runner.main(args) == 0
    base_runs = base_model_calls[1]
    first, second = json.loads((base_runs / "base_model.json").read_text())["calls"]
    return {"pushed version": (_trainer_model_dir(second), base_runs, first["path"]),
            "BERT checkpoint with a span head": (_only(local_runner.build_config(
                local_runner.parse_args(args)).pipeline_root), runs_dir, base)}


def _only(pipeline_root) -> pathlib.Path:
    """The Trainer's model directory of a runs directory with one Trainer execution."""
    (model_dir,) = pathlib.Path(pipeline_root, "Trainer", "model").iterdir()
    return model_dir


def _trainer_model_dir(call: dict) -> pathlib.Path:
    from bertqa.operations import pushed_models

    pushed = pushed_models.find_pushed(os.path.dirname(call["path"]), call["version"])
    return pathlib.Path(pushed.saved_model_dir).parent


def _first_logged_loss(model_dir: pathlib.Path) -> float:
    from bertqa.operations import report_data

    # The ModelRun artifact of the same Trainer execution: Trainer/model_run/<execution id>.
    model_run = model_dir.parent.parent / "model_run" / model_dir.name
    return report_data.read_training_curve(str(model_run))[0].loss


def test_runs_from_a_base_start_with_a_lower_loss_than_a_cold_start(first_run, runs_from_bases):
    cold = _first_logged_loss(_only(first_run[0].pipeline_root))
    for kind, (model_dir, _, base) in runs_from_bases.items():
        summary = _training_summary(model_dir)
        assert summary["initialised_from"] == {"path": base, "kind": kind} and summary["warm_started_from"] is None
        assert _first_logged_loss(model_dir) < cold / 2, kind


def test_lineage_and_ml_metadata_name_the_base_as_the_trainers_input(runs_from_bases, capsys):
    for kind, (_, runs_dir, base) in runs_from_bases.items():
        assert cli.main(["lineage", "--runs-dir", str(runs_dir), "--json"]) == 0
        latest = json.loads(capsys.readouterr().out)["model"]
        assert latest["initialised_from"] == {"path": base, "kind": kind}
        assert latest["base_model_input"] == [base]
        assert cli.main(["lineage", "--runs-dir", str(runs_dir)]) == 0
        assert f"started from the base {base} ({kind})" in capsys.readouterr().out


def test_a_base_of_another_architecture_stops_the_run_in_one_line_before_anything_runs(
        learnable_data_dir, vocab_path, tmp_path, capsys):
    from bert_layout import write_bert_qa_checkpoint

    from bertqa.model import model_spec, training

    wider = write_bert_qa_checkpoint(training.build_model(model_spec.get("tiny_random")), tmp_path / "wider",
                                     vocab_path, hidden_size=64)
    code = local_runner.main(["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(learnable_data_dir),
                              *TINY_ARGS[:-1], "--init-from", str(wider)])
    assert code == local_runner.EXIT_BAD_INPUT
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert error.startswith(f"error: --init-from {wider} (BERT checkpoint with a span head) cannot start this model")
    assert "hidden_size 64 in the checkpoint, 32 here" in error
    assert not (tmp_path / "runs" / "bertqa" / "artifacts").exists()
