"""Scheduled retraining for real: three spans through `bertqa retrain` (LocalDagRunner, SQLite ML
Metadata), warm start, the baseline gate, the lock and `bertqa lineage`, on synthetic spans a
tiny model learns (tests/synthetic_spans.py)."""

import contextlib
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import types

import pytest
from synthetic_spans import write_span

import bertqa_cli as cli
from bertqa.on_device import task_library
from bertqa.operations import metadata_store, pushed_models, run_lock
from bertqa_cli import retrain

pytestmark = pytest.mark.e2e

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--spec", "tiny_random", "--min-f1", "0", "--train-steps", "150"]


def _args(data_dir, runs_dir, *extra):
    return ["--data-dir", str(data_dir), "--runs-dir", str(runs_dir), *TINY, *extra]


def _tree_bytes(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _store(runs_dir):
    return metadata_store.sqlite_store(str(runs_dir / "bertqa" / "metadata.sqlite"))


def _evaluator_blessings(runs_dir) -> list[dict]:
    store = _store(runs_dir)
    found = [a for a in store.get_artifacts_by_type("ModelBlessing")
             if metadata_store.producer_component(store, a.id) == "SquadEvaluator"]
    return [metadata_store.custom_properties(a) for a in sorted(found, key=lambda a: a.id)]


def _trainer_executions(runs_dir) -> int:
    store = _store(runs_dir)
    (trainer_type,) = [t for t in store.get_execution_types() if t.name.endswith("Trainer")]
    return len(store.get_executions_by_type(trainer_type.name))


def _retrain_while_another_tries(data_dir, runs_dir):
    """`bertqa retrain` in a subprocess, and a second one started in-process while the first holds the lock."""
    lock = runs_dir / "bertqa" / run_lock.LOCK_FILE
    first = subprocess.Popen([sys.executable, "-m", "bertqa_cli", "retrain", *_args(data_dir, runs_dir)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    try:
        deadline = time.monotonic() + 600  # a safety net: it takes seconds
        while f"pid {first.pid} " not in (lock.read_text() if lock.exists() else ""):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first retrain never took the lock"
            time.sleep(0.2)
        started = time.monotonic()
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = cli.main(["retrain", *_args(data_dir, runs_dir)])
        second = types.SimpleNamespace(code=code, seconds=time.monotonic() - started, stderr=stderr.getvalue(),
                                       lock=lock, holder_pid=first.pid)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    (line,) = [line for line in out.splitlines() if line.startswith("retrain:")]
    return line, second


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Span 1 (first push), span 2 (warm start, compared), span 3 (shuffled labels, run in a subprocess
    while a second retrain tries to start), each the latest span when its retrain starts."""
    root = tmp_path_factory.mktemp("retrain")
    data_dir, runs_dir = root / "data", root / "runs"
    serving = runs_dir / "bertqa" / "serving"
    outcomes, pushed = {}, {}
    for span in (1, 2):
        write_span(data_dir, span)
        outcomes[span] = retrain.retrain(retrain.parse_args(_args(data_dir, runs_dir)))
        pushed[span] = pushed_models.latest_pushed(str(serving))
    serving_before_span_3 = _tree_bytes(serving)
    write_span(data_dir, 3, shuffle_labels=True)
    span_3_line, second_retrain = _retrain_while_another_tries(data_dir, runs_dir)
    return types.SimpleNamespace(data_dir=data_dir, runs_dir=runs_dir, serving=serving, outcomes=outcomes,
                                 pushed=pushed, blessings=_evaluator_blessings(runs_dir),
                                 serving_before_span_3=serving_before_span_3, span_3_line=span_3_line,
                                 second_retrain=second_retrain)


def test_first_span_is_pushed_and_judged_on_min_f1_alone(loop):
    assert loop.outcomes[1].pushed and loop.outcomes[1].span == 1
    first = loop.blessings[0]
    assert first["blessed"] == 1 and "baseline_version" not in first
    assert "no baseline" in first["reason"]
    assert loop.pushed[1].span == 1 and loop.pushed[1].record["warm_started_from"] is None


def test_second_span_is_warm_started_from_and_compared_with_the_first(loop):
    first, second = loop.pushed[1], loop.pushed[2]
    assert loop.outcomes[2].pushed and second.version != first.version and second.span == 2
    assert second.record["warm_started_from"]["model_id"] == first.model_id
    blessing = loop.blessings[1]
    assert blessing["blessed"] == 1
    assert blessing["baseline_model_id"] == first.model_id and blessing["baseline_version"] == first.version
    assert blessing["f1_delta"] == pytest.approx(blessing["f1"] - blessing["baseline_f1"])
    # The tiny model learned the task, so the comparison means something.
    assert blessing["baseline_f1"] > 50


def test_worse_third_span_is_not_pushed_and_serving_is_byte_for_byte_unchanged(loop):
    assert loop.span_3_line.startswith("retrain: span 3 ") and "not pushed" in loop.span_3_line
    assert f"(version {loop.pushed[2].version}, span 2)" in loop.span_3_line
    blessing = loop.blessings[2]
    assert blessing["blessed"] == 0 and blessing["baseline_model_id"] == loop.pushed[2].model_id
    assert blessing["f1_delta"] < 0 and "worse than the tolerance" in blessing["reason"]
    assert _tree_bytes(loop.serving) == loop.serving_before_span_3
    # What the next run's Trainer (warm start) and SquadEvaluator (baseline) read: still span 2's model.
    assert pushed_models.latest_pushed(str(loop.serving)).version == loop.pushed[2].version


def test_rerunning_a_span_the_pushed_model_was_trained_on_starts_no_trainer(loop, capsys):
    trainers = _trainer_executions(loop.runs_dir)
    assert cli.main(["retrain", *_args(loop.data_dir, loop.runs_dir, "--span", "2")]) == 0
    assert "already trained" in capsys.readouterr().out
    assert _trainer_executions(loop.runs_dir) == trainers


def test_lineage_json_maps_each_pushed_version_to_its_span(loop, capsys):
    assert cli.main(["lineage", "--runs-dir", str(loop.runs_dir), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {v["version"]: v["span"] for v in answer["versions"]} == {
        loop.pushed[1].version: 1, loop.pushed[2].version: 2}
    latest = answer["model"]
    assert latest["version"] == loop.pushed[2].version
    assert latest["warm_started_from"]["version"] == loop.pushed[1].version
    assert latest["baseline"]["version"] == loop.pushed[1].version
    assert latest["input_files"] == {"train": "span-2/train.json", "eval": "span-2/eval.json"}
    assert "split:train" in latest["input_fingerprint"] and latest["spec"]["name"] == "tiny_random"
    assert latest["variants"]["dynamic"]["blessed"] == 1
    assert latest["project"]["package"]
    # A .tflite path selects its version.
    tflite = os.path.join(loop.pushed[1].path, "model.tflite")
    assert cli.main(["lineage", "--runs-dir", str(loop.runs_dir), tflite]) == 0
    assert f"pushed version {loop.pushed[1].version}" in capsys.readouterr().out


def test_second_retrain_exits_at_once_naming_the_lock_while_one_runs(loop):
    second = loop.second_retrain
    assert second.code == retrain.EXIT_LOCKED and second.seconds < 5
    (error,) = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert str(second.lock) in error and f"pid {second.holder_pid}" in error
    # ... and the first one completed normally (its summary line is checked above).
    assert loop.span_3_line


def test_missing_or_uneven_span_stops_with_one_message_and_runs_nothing(loop, tmp_path, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(loop.data_dir / "span-1", data_dir / "span-1")
    (data_dir / "span-2").mkdir()
    shutil.copy(loop.data_dir / "span-2" / "train.json", data_dir / "span-2" / "train.json")  # no eval.json
    for extra in ((), ("--span", "9")):
        assert cli.main(["retrain", *_args(data_dir, tmp_path / "runs", *extra)]) == retrain.EXIT_BAD_INPUT
        (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert "span-{SPAN}/eval.json" in error and "Spans present: train: 1, 2; eval: 1" in error
    assert not (tmp_path / "runs" / "bertqa" / "metadata.sqlite").exists()


def test_empty_span_stops_with_one_message_and_pushes_nothing(loop, tmp_path, capsys):
    data_dir = tmp_path / "data"
    (data_dir / "span-1").mkdir(parents=True)
    for split in ("train", "eval"):
        (data_dir / "span-1" / f"{split}.json").write_text('{"version": "1.1", "data": []}')
    assert cli.main(["retrain", *_args(data_dir, tmp_path / "runs")]) == retrain.EXIT_BAD_INPUT
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "span-1" in error and "no questions" in error
    assert not (tmp_path / "runs" / "bertqa" / "serving").exists()


def test_task_library_answers_with_the_pushed_retrained_model(loop):
    context = "The river ran past an old mill near the town. The code word is falcon. A train left at nine."
    tflite = os.path.join(loop.pushed[2].path, "model.tflite")
    answers = task_library.answer_with_task_library(tflite, context, "What is the code word?", top_k=1)
    # The Task Library maps a token span back to whole whitespace-separated words of the
    # context, so the predicted word comes with the period that follows it.
    assert [text.rstrip(".") for text, _ in answers] == ["falcon"]


def test_run_reports_compare_with_the_baseline_overall_and_per_slice(loop):
    store = _store(loop.runs_dir)
    reports = sorted(store.get_artifacts_by_type("bertqa_artifacts.RunReport"), key=lambda a: a.id)
    pages = [pathlib.Path(metadata_store.custom_properties(a)["report"]).read_text() for a in reports]
    span_2, span_3 = pages[1], pages[2]
    # Span 2's report went out with its model; span 3's (not pushed) stayed in the run.
    assert (loop.serving / loop.pushed[2].version / "report.html").read_text() == span_2
    assert f"pushed version {loop.pushed[1].version}" in span_2 and 'id="baseline-table"' in span_2
    assert "not blessed" in span_3 and f"pushed version {loop.pushed[2].version}" in span_3
    assert "nothing pushed" in span_3 and "<th>baseline F1</th>" in span_3
    sliced = json.loads(pathlib.Path(metadata_store.custom_properties(reports[2])["report"]).parent
                        .joinpath("sliced_metrics.json").read_text())
    assert sliced["overall"]["baseline_f1"] == pytest.approx(loop.blessings[2]["baseline_f1"])
    assert all(row["baseline_f1"] is not None for row in sliced["slices"]["article"])
