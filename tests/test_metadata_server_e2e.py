"""ML Metadata on a real MariaDB server (Debian's package, started by scripts/mariadb_local.sh on
loopback): retraining over two spans with its baseline gate, a second runs directory sharing the
store, the server stopped in the middle of a run and the run after its restart, and `bertqa
lineage` and `bertqa report` read back from the server. A tiny model on synthetic spans that it
learns (tests/synthetic_spans.py)."""

import contextlib
import io
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
import types

import pytest
from mariadb import LocalMariaDb
from synthetic_spans import write_span

import bertqa_cli as cli
import local_runner
from bertqa.operations import metadata_store, pushed_models
from bertqa_cli import retrain

pytestmark = pytest.mark.e2e

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = ["--spec", "tiny_random", "--min-f1", "0", "--train-steps", "150"]
SPANS = ["--train-pattern", "span-{SPAN}/train.json", "--eval-pattern", "span-{SPAN}/eval.json"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = LocalMariaDb(tmp_path_factory.mktemp("mariadb"))
    db.start()
    saved = os.environ.get(metadata_store.PASSWORD_ENV)
    os.environ.update(db.environment())
    yield db
    db.stop()
    if saved is None:
        os.environ.pop(metadata_store.PASSWORD_ENV, None)
    else:
        os.environ[metadata_store.PASSWORD_ENV] = saved


class _Records(logging.Handler):
    """Every log record of the in-process runs, formatted as a handler would write it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def _stop_when_training_starts(runs_dir: pathlib.Path, db: LocalMariaDb) -> threading.Thread:
    """Stops the server as soon as the run's Trainer has started (its output directory exists)."""
    trainer_outputs = runs_dir / "bertqa" / "artifacts" / "Trainer"

    def watch():
        deadline = time.monotonic() + 900  # a safety net: the Trainer starts within a minute
        while not trainer_outputs.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        db.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.fixture(scope="module")
def team(server, tmp_path_factory):
    """Runs directory A retrains span 1 (the real command, in a subprocess) and span 2 (compared
    with span 1's model); runs directory B, on the same server, runs span 2: the server is stopped
    once B's Trainer has started, then restarted, and B runs again."""
    root = tmp_path_factory.mktemp("team")
    data, runs_a, runs_b = root / "data", root / "runs-a", root / "runs-b"
    metadata = ["--metadata-mysql", server.url]
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        write_span(data, 1)
        first = subprocess.run(
            [sys.executable, "-m", "bertqa_cli", "retrain", "--data-dir", str(data), "--runs-dir", str(runs_a),
             *TINY, *metadata], cwd=REPO, capture_output=True, text=True, timeout=1200,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
        assert first.returncode == 0, first.stderr[-3000:]
        pushed_first = pushed_models.latest_pushed(str(runs_a / "bertqa" / "serving"))
        write_span(data, 2)
        second = retrain.retrain(retrain.parse_args(["--data-dir", str(data), "--runs-dir", str(runs_a), *TINY,
                                                     *metadata]))

        b_args = ["--data-dir", str(data), "--runs-dir", str(runs_b), *SPANS, *TINY, *metadata]
        watcher = _stop_when_training_starts(runs_b, server)
        stopped_err = io.StringIO()
        with contextlib.redirect_stderr(stopped_err):
            stopped_code = local_runner.main(b_args)
        watcher.join(timeout=120)
        serving_b_after_stop = sorted(p.name for p in (runs_b / "bertqa" / "serving").glob("*"))
        server.start()
        restarted_out = io.StringIO()
        with contextlib.redirect_stdout(restarted_out):
            restarted_code = local_runner.main(b_args)
    finally:
        logging.getLogger().removeHandler(records)
    return types.SimpleNamespace(
        data=data, runs_a=runs_a, runs_b=runs_b, first=first, pushed_first=pushed_first, second=second,
        stopped_code=stopped_code, stopped_err=stopped_err.getvalue(), serving_b_after_stop=serving_b_after_stop,
        restarted_code=restarted_code, restarted_out=restarted_out.getvalue(), log_lines=records.lines,
        store=metadata_store.open_store(server.store))


def _runs_of(store, runs_dir: pathlib.Path) -> set[int]:
    """The ids of the pipeline_run contexts started from `runs_dir`."""
    names = metadata_store.started_runs(str(runs_dir / "bertqa"))
    return {c.id for c in store.get_contexts_by_type("pipeline_run") if c.name in names}


def _evaluator_blessings(store, run_contexts: set[int]) -> list[dict]:
    ours = {a.id for c in run_contexts for a in store.get_artifacts_by_context(c)}
    found = [a for a in store.get_artifacts_by_type("ModelBlessing")
             if a.id in ours and metadata_store.producer_component(store, a.id) == "SquadEvaluator"]
    return [metadata_store.custom_properties(a) for a in sorted(found, key=lambda a: a.id)]


def test_retraining_records_on_the_server_and_pushes(team):
    (line,) = [line for line in team.first.stdout.splitlines() if line.startswith("retrain:")]
    assert line.startswith("retrain: span 1 ") and "pushed" in line and "not pushed" not in line
    assert team.pushed_first is not None and team.pushed_first.span == 1
    # ML Metadata went to the server alone: no SQLite file in the runs directory.
    assert not (team.runs_a / "bertqa" / "metadata.sqlite").exists()
    pushed = [metadata_store.custom_properties(a) for a in team.store.get_artifacts_by_type("PushedModel")]
    assert str(team.runs_a / "bertqa" / "serving" / team.pushed_first.version) in {
        p.get("pushed_destination") for p in pushed if p.get("pushed")}


def test_second_span_is_judged_against_the_first_spans_model_from_the_server(team):
    assert team.second.span == 2
    assert f"(version {team.pushed_first.version}, span 1)" in team.second.line
    blessings = _evaluator_blessings(team.store, _runs_of(team.store, team.runs_a))
    assert [b.get("baseline_version") for b in blessings] == [None, team.pushed_first.version]
    assert blessings[1]["f1_delta"] == pytest.approx(blessings[1]["f1"] - blessings[1]["baseline_f1"])


def test_password_appears_in_no_output_log_or_file(team, server):
    assert server.secret_core not in team.first.stdout + team.first.stderr
    assert not [line for line in team.log_lines if server.secret_core in line]
    # TFX logs the connection config when a run starts: it is there, with the password masked.
    assert any("password" in line and "***" in line for line in team.first.stderr.splitlines())
    secret = server.secret_core.encode()
    for runs_dir in (team.runs_a, team.runs_b):
        leaking = [p for p in runs_dir.rglob("*") if p.is_file() and secret in p.read_bytes()]
        assert not leaking


def test_server_stopped_mid_run_gives_one_line_and_blesses_and_pushes_nothing(team, server):
    assert team.stopped_code == local_runner.EXIT_BAD_INPUT
    errors = [line for line in team.stopped_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in team.stopped_err
    assert server.store.describe() in errors[0] and "stopped answering during the run" in errors[0]
    assert team.serving_b_after_stop == []
    (killed_run,) = sorted(_runs_of(team.store, team.runs_b))[:1]
    assert _evaluator_blessings(team.store, {killed_run}) == []
    assert not [a for a in team.store.get_artifacts_by_context(killed_run) if a.type == "PushedModel"]


def test_run_after_the_restart_succeeds_and_cancels_only_its_own_unfinished_execution(team):
    assert team.restarted_code == 0, team.restarted_out
    assert "pushed: " + str(team.runs_b / "bertqa" / "serving") in team.restarted_out
    assert pushed_models.latest_pushed(str(team.runs_b / "bertqa" / "serving")) is not None
    killed_run, restarted_run = sorted(_runs_of(team.store, team.runs_b))
    cancelled = [e for e in team.store.get_executions()
                 if metadata_store.INTERRUPTED_PROPERTY in e.custom_properties]
    assert cancelled, "the Trainer execution the stopped run left RUNNING was not marked"
    for execution in cancelled:
        runs = {c.id for c in team.store.get_contexts_by_execution(execution.id) if c.type == "pipeline_run"}
        assert runs == {killed_run}
    assert _evaluator_blessings(team.store, {restarted_run})


def test_two_runs_directories_share_one_store_and_lineage_lists_both(team, server, capsys):
    assert cli.main(["lineage", "--metadata-mysql", server.url, "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)["versions"]
    serving_dirs = [os.path.dirname(v["destination"]) for v in versions]
    assert serving_dirs.count(str(team.runs_a / "bertqa" / "serving")) == 2
    assert serving_dirs.count(str(team.runs_b / "bertqa" / "serving")) == 1
    assert [v["span"] for v in versions] == [1, 2, 2]
    assert cli.main(["lineage", "--metadata-mysql", server.url]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split()[-2:] == ["serving", "directory"]


def test_report_is_rebuilt_from_the_server_for_each_runs_directory(team, server, capsys):
    for runs_dir in (team.runs_a, team.runs_b):
        run_dir = runs_dir / "bertqa"
        assert cli.main(["report", str(run_dir), "--metadata-mysql", server.url]) == 0
        assert f"report: {run_dir / 'report' / 'report.html'}" in capsys.readouterr().out
    # B's report is B's own run: its pushed model went to B's serving directory.
    html = (team.runs_b / "bertqa" / "report" / "report.html").read_text()
    assert str(team.runs_b / "bertqa" / "serving") in html


def test_unreachable_server_stops_before_anything_runs_with_one_line(team, tmp_path, capsys):
    closed = LocalMariaDb(tmp_path / "never-started")  # a free port nothing listens on
    code = local_runner.main(["--data-dir", str(team.data), "--runs-dir", str(tmp_path / "runs"), *SPANS, *TINY,
                              "--metadata-mysql", closed.url])
    assert code == local_runner.EXIT_BAD_INPUT
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert error.startswith(f"error: cannot reach the ML Metadata server {closed.store.describe()}: ")
    assert "Connection refused" in error and "scripts/mariadb_local.sh start" in error
    assert not (tmp_path / "runs" / "bertqa" / "artifacts").exists()


def test_missing_password_is_named_before_anything_runs(team, server, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(metadata_store.PASSWORD_ENV)
    code = local_runner.main(["--data-dir", str(team.data), "--runs-dir", str(tmp_path / "runs"), *SPANS, *TINY,
                              "--metadata-mysql", server.url])
    assert code == local_runner.EXIT_BAD_INPUT
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert metadata_store.PASSWORD_ENV in error and server.store.describe() in error
