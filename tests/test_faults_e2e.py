"""Faults, for real: a pipeline SIGKILLed mid-training, a push killed at every step, a second
pipeline on the same runs directory, a full and a read-only disk. Tiny data and model,
LocalDagRunner, SQLite ML Metadata, the Task Library.
"""

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

import local_runner
from bertqa.on_device import task_library
from bertqa.operations import atomic_push, metadata_store, pushed_models, run_lock
from components.trainer import phases as trainer_phases

pytestmark = pytest.mark.e2e

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN_STEPS = 200
CHECKPOINT_EVERY = 10
KILL_AFTER_CHECKPOINT = 20
# The Trainer's upstream; the other data components may run before or after it.
TRAINER_UPSTREAM = {"SquadExampleGen", "BertQATransform"}
NODES = ("SquadExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "BertQATransform")
State = metadata_store_pb2.Execution.State


def _args(runs_dir, data_dir, steps=TRAIN_STEPS):
    return ["--runs-dir", str(runs_dir), "--data-dir", str(data_dir), "--train-pattern", "tiny_train.json",
            "--eval-pattern", "tiny_eval.json", "--spec", "tiny_random", "--min-f1", "0",
            "--train-steps", str(steps), "--checkpoint-every-steps", str(CHECKPOINT_EVERY)]


def _holds_lock(lock: str, pid: int) -> bool:
    return os.path.exists(lock) and f"pid {pid} " in pathlib.Path(lock).read_text(errors="replace")


def _main(args) -> tuple[int, str, float]:
    """local_runner.main in this process: (exit code, stderr, seconds)."""
    stderr, started = io.StringIO(), time.monotonic()
    with contextlib.redirect_stderr(stderr):
        code = local_runner.main(args)
    return code, stderr.getvalue(), time.monotonic() - started


def _latest_checkpoint_step(trainer_dir: pathlib.Path) -> int:
    """The step of the checkpoint that a resume would restore (the one the `checkpoint` state file names)."""
    import tensorflow as tf

    steps = [int(latest.rsplit("-", 1)[1])
             for directory in trainer_dir.glob(f"{trainer_phases.CHECKPOINTS_SUBDIR}/*")
             if (latest := tf.train.latest_checkpoint(str(directory)))]
    return max(steps, default=0)


def _executions(store, node_id: str) -> list:
    found = []
    for execution in store.get_executions():
        names = {c.name.split(".")[-1] for c in store.get_contexts_by_execution(execution.id) if c.type == "node"}
        if node_id in names:
            found.append(execution)
    return sorted(found, key=lambda e: e.id)


@dataclasses.dataclass
class KilledRun:
    runs_dir: pathlib.Path
    config: object
    checkpoint_step: int  # the latest checkpoint when the process was killed
    killed_store_trainer_states: list
    blessings_after_kill: int
    completed_before_kill: set  # nodes with a COMPLETE execution when the process was killed
    serving_after_kill: list
    second_run: tuple  # (code, stderr, seconds) of a run started while the first held the lock
    holder_pid: int
    resumed_code: int


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory, fixtures_dir) -> KilledRun:
    runs_dir = tmp_path_factory.mktemp("runs")
    args = _args(runs_dir, fixtures_dir)
    config = local_runner.build_config(local_runner.parse_args(args))
    trainer_dir = pathlib.Path(config.pipeline_root, "Trainer")
    log = open(runs_dir / "killed-run.log", "w")  # noqa: SIM115 (closed below)
    first = subprocess.Popen([sys.executable, "local_runner.py", *args], cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    second_run = None
    try:
        deadline = time.monotonic() + 900
        lock = run_lock.lock_path(str(runs_dir), config.pipeline_name)
        while _latest_checkpoint_step(trainer_dir) < KILL_AFTER_CHECKPOINT:
            assert first.poll() is None, "the pipeline ended before it could be killed mid-training"
            assert time.monotonic() < deadline, "no checkpoint within 15 minutes"
            if second_run is None and _holds_lock(lock, first.pid):
                second_run = _main(args)  # while the first one holds the lock
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    assert first.returncode == -signal.SIGKILL
    assert second_run is not None, "the lock was never seen held"
    store = metadata_store.sqlite_store(local_runner.metadata_path(config))
    killed = KilledRun(
        runs_dir=runs_dir, config=config, checkpoint_step=_latest_checkpoint_step(trainer_dir),
        killed_store_trainer_states=[e.last_known_state for e in _executions(store, "Trainer")],
        blessings_after_kill=len(store.get_artifacts_by_type("ModelBlessing")),
        completed_before_kill={node for node in NODES
                               if [e.last_known_state for e in _executions(store, node)] == [State.COMPLETE]},
        serving_after_kill=sorted(os.listdir(config.serving_dir)) if os.path.isdir(config.serving_dir) else [],
        second_run=second_run, holder_pid=first.pid, resumed_code=0)
    killed.resumed_code = _main(args)[0]  # the same command again
    return killed


@pytest.fixture(scope="module")
def store(killed_then_resumed):
    return metadata_store.sqlite_store(local_runner.metadata_path(killed_then_resumed.config))


def _trainer_model(store):
    """The one published (LIVE) model of the Trainer."""
    (model,) = [a for a in store.get_artifacts_by_type("Model") if a.state == metadata_store_pb2.Artifact.LIVE
                and metadata_store.producer_component(store, a.id) == "Trainer"]
    return model


def _training_summary(store) -> dict:
    model = _trainer_model(store)
    with open(os.path.join(model.uri, trainer_phases.TRAINING_SUMMARY_FILE)) as f:
        return json.load(f)


def test_the_kill_left_a_running_trainer_and_nothing_blessed_or_pushed(killed_then_resumed):
    assert killed_then_resumed.killed_store_trainer_states == [State.RUNNING]
    assert killed_then_resumed.blessings_after_kill == 0
    assert killed_then_resumed.serving_after_kill == []
    assert killed_then_resumed.checkpoint_step >= KILL_AFTER_CHECKPOINT


def test_rerun_resumes_training_from_the_last_checkpoint_to_the_full_step_count(killed_then_resumed, store):
    assert killed_then_resumed.resumed_code == 0
    summary = _training_summary(store)
    assert summary["resumed_from_step"] == killed_then_resumed.checkpoint_step
    assert summary["steps_trained"] == summary["steps"] == TRAIN_STEPS


def test_components_that_finished_before_the_kill_come_from_the_cache(killed_then_resumed, store):
    assert killed_then_resumed.completed_before_kill >= TRAINER_UPSTREAM
    for node in killed_then_resumed.completed_before_kill:
        states = [e.last_known_state for e in _executions(store, node)]
        assert states == [State.COMPLETE, State.CACHED], node


def test_the_killed_execution_is_marked_not_completed_and_nothing_of_it_is_blessed(store):
    killed, resumed = _executions(store, "Trainer")
    assert killed.last_known_state == State.CANCELED
    assert metadata_store.INTERRUPTED_PROPERTY in killed.custom_properties
    assert resumed.last_known_state == State.COMPLETE
    killed_outputs = {e.artifact_id for e in store.get_events_by_execution_ids([killed.id])
                      if e.type == metadata_store_pb2.Event.OUTPUT}
    live = [a for a in store.get_artifacts_by_id(list(killed_outputs)) if a.state == metadata_store_pb2.Artifact.LIVE]
    assert live == []
    trainer_model = _trainer_model(store)
    for blessing in store.get_artifacts_by_type("ModelBlessing"):
        props = metadata_store.custom_properties(blessing)
        assert props.get("current_model_id") in (None, trainer_model.id), props


def test_resume_checkpoints_are_removed_once_the_model_is_written(killed_then_resumed):
    checkpoints = pathlib.Path(killed_then_resumed.config.pipeline_root, "Trainer", trainer_phases.CHECKPOINTS_SUBDIR)
    assert not list(checkpoints.iterdir())


def test_a_second_pipeline_on_the_same_runs_dir_exits_at_once_naming_the_lock(killed_then_resumed):
    code, stderr, seconds = killed_then_resumed.second_run
    assert code == local_runner.EXIT_LOCKED and seconds < 5
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert run_lock.LOCK_FILE in line and f"pid {killed_then_resumed.holder_pid} " in line


def test_the_resumed_run_pushed_one_whole_version(killed_then_resumed):
    (pushed,) = pushed_models.list_pushed(killed_then_resumed.config.serving_dir)
    assert {"model.tflite", "vocab.txt", "variants.json", "model_record.json"} <= set(os.listdir(pushed.path))


# A push stopped by SIGKILL after its k-th step, in a process of its own.
_PUSH_AND_DIE = """
import os, signal, sys
from bertqa.operations import atomic_push
source, serving, version, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
steps = []
def on_step(step):
    steps.append(step)
    if len(steps) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
atomic_push.push_version(source, serving, version, on_step=on_step)
"""


def _whole_versions_only(serving: pathlib.Path, source: pathlib.Path) -> list[str]:
    """The versions in `serving`; fails unless each is byte-identical to `source` and loads in the Task Library."""
    expected = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    versions = []
    for entry in sorted(serving.iterdir()):
        if not entry.name.isdigit():
            assert entry.name.startswith(atomic_push.PARTIAL_PREFIX), entry
            continue
        found = {p.relative_to(entry): p.read_bytes() for p in entry.rglob("*") if p.is_file()}
        assert found == expected, f"version {entry.name} is not whole"
        assert task_library.task_library_load_problems(str(entry / "model.tflite")) == []
        versions.append(entry.name)
    return versions


def test_a_push_killed_at_any_step_leaves_only_whole_versions_the_task_library_loads(
        killed_then_resumed, tmp_path):
    (pushed,) = pushed_models.list_pushed(killed_then_resumed.config.serving_dir)
    source = tmp_path / "source"
    shutil.copytree(pushed.path, source)
    steps: list[str] = []
    atomic_push.push_version(str(source), str(tmp_path / "count"), "1", on_step=steps.append)
    assert steps[-1] == "renamed" and len(steps) >= 6, steps

    serving = tmp_path / "serving"
    for kill_after in range(1, len(steps) + 1):
        version = str(1000 + kill_after)
        done = subprocess.run([sys.executable, "-c", _PUSH_AND_DIE, str(source), str(serving), version,
                               str(kill_after)], cwd=REPO, timeout=120)
        assert done.returncode == -signal.SIGKILL, (kill_after, steps[kill_after - 1])
        versions = _whole_versions_only(serving, source)
        # Killed once the rename was done, the version is there; killed before it, it is not.
        assert (version in versions) == (kill_after == len(steps)), (kill_after, steps[kill_after - 1])
        assert [m.version for m in pushed_models.list_pushed(str(serving))] == versions
        # Before the rename, the copy sits in a staging directory that no reader lists.
        staged = [p.name for p in serving.iterdir() if p.name.startswith(atomic_push.PARTIAL_PREFIX)]
        assert len(staged) == (kill_after < len(steps)), (kill_after, staged)
    # The next push clears what a killed one left half-copied.
    subprocess.run([sys.executable, "-c", _PUSH_AND_DIE, str(source), str(serving), "1999", "3"], cwd=REPO)
    assert any(p.name.startswith(atomic_push.PARTIAL_PREFIX) for p in serving.iterdir())
    atomic_push.push_version(str(source), str(serving), "2000")
    assert not any(p.name.startswith(atomic_push.PARTIAL_PREFIX) for p in serving.iterdir())
    assert _whole_versions_only(serving, source) == [str(1000 + len(steps)), "2000"]


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, size: str, read_only: bool = False):
    """A small tmpfs at `path` (a disk that fills, or one that cannot be written); needs root."""
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_stops_the_run_with_one_message_naming_the_runs_dir_and_pushes_nothing(
        tmp_path, fixtures_dir):
    # 4 MB holds the data components' outputs and the store (under 1 MB), not the Trainer's SavedModel.
    with _tmpfs(tmp_path / "small", "4m") as runs_dir:
        args = _args(runs_dir, fixtures_dir, steps=5)
        code, stderr, _ = _main(args)
        config = local_runner.build_config(local_runner.parse_args(args))
        versions = pushed_models.list_pushed(config.serving_dir)
        store = metadata_store.sqlite_store(local_runner.metadata_path(config))
        blessed = [a for a in store.get_artifacts_by_type("ModelBlessing")
                   if metadata_store.custom_properties(a).get("blessed")]
    assert code == local_runner.EXIT_BAD_INPUT
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert str(runs_dir) in line and "No space left on device" in line and "--runs-dir" in line
    assert "Traceback" not in stderr
    assert versions == [] and blessed == []


def test_a_read_only_runs_dir_stops_the_run_at_once_with_one_message(tmp_path, fixtures_dir):
    with _tmpfs(tmp_path / "readonly", "1m", read_only=True) as runs_dir:
        code, stderr, seconds = _main(_args(runs_dir, fixtures_dir))
    assert code == local_runner.EXIT_BAD_INPUT and seconds < 5
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert str(runs_dir) in line and "Read-only file system" in line and "--runs-dir" in line
