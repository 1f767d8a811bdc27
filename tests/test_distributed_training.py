"""The Trainer past one process: two workers on 127.0.0.1 under MultiWorkerMirroredStrategy,
through the real run_fn, killed and resumed; MirroredStrategy over two logical CPU devices.

One module fixture does the runs (each is a few processes importing TensorFlow): the tiny spec
without dropout (so that one process and two replicas compute the same updates) trains on the
same seeded global batches
  - in one process (the reference),
  - in two worker processes started by run_fn (train_workers=2), one of which the test kills
    after the chief's first checkpoint,
  - and again, as a Vertex AI job runs it: one run_fn per task, each with its TF_CONFIG and
    the same output directories, which resumes the killed training from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from bertqa.data.windowing import Window, WindowConfig, window_to_tf_example
from bertqa.model import distribution, model_spec
from components.bert_qa_transform.tokenizer_artifact import TransformConfig, write_tokenizer_artifact
from components.trainer import child_process

REPO = pathlib.Path(__file__).resolve().parents[1]
TASKS = str(REPO / "tests" / "distributed_tasks.py")
STEPS, CHECKPOINT_EVERY, BATCH = 30, 5, 8
# Two replicas (two workers, or MirroredStrategy's two devices) against one process: float32
# sums of two half batches' gradients in another order than one whole batch's, compounded by
# Adam over the steps. Measured: max |difference| 2e-6 (30 steps, two workers).
RTOL, ATOL = 1e-4, 1e-5


def _window(i: int) -> Window:
    length = 12 + (i * 7) % 50
    ids = tuple(1000 + (i * 31 + j) % 5000 for j in range(length))
    start = 1 + i % (length - 2)
    return Window(unique_id=i, example_id=f"q{i}", window_index=0, input_word_ids=ids, input_mask=(1,) * length,
                  input_type_ids=(0,) * length, start_position=start, end_position=start + 1,
                  token_char_starts=(-1,) * length, token_char_ends=(-1,) * length,
                  token_is_max_context=(0,) * length)


@dataclasses.dataclass
class Runs:
    root: pathlib.Path
    reference: pathlib.Path  # one process's SavedModel
    reference_run: pathlib.Path  # one process's model_run_dir (its TensorBoard logs)
    killed_error: BaseException | None
    killed_checkpoint_steps: list
    serving: pathlib.Path  # both tasks' serving_model_dir
    model_run: pathlib.Path
    task_logs: list
    checkpoints_left: list


def _fn_args(root: pathlib.Path, execution: int, windows: str, tokenizer: str, **config) -> dict:
    trainer = root / "Trainer"
    spec = dataclasses.replace(model_spec.get("tiny_random"), dropout_rate=0.0)
    return {"train_files": [windows], "transform_output": tokenizer,
            "serving_model_dir": str(trainer / "model" / str(execution) / "Format-Serving"),
            "model_run_dir": str(trainer / "model_run" / str(execution)), "train_steps": STEPS,
            "custom_config": {"model_spec": model_spec.to_json(spec), "batch_size": BATCH, "cold_start": True,
                              "checkpoint_every_steps": CHECKPOINT_EVERY, "matmul_dtype": "float32", **config}}


def _run_fn(fields: dict) -> None:
    from tfx.components.trainer.fn_args_utils import FnArgs

    from components.trainer import module

    module.run_fn(FnArgs(**fields))


def _worker_pid(index: int) -> int | None:
    """The pid of this process's training worker `index` (a child with that TF_CONFIG task)."""
    for environ in glob.glob("/proc/[0-9]*/environ"):
        pid = int(environ.split("/")[2])
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent != os.getpid():
                continue
            with open(environ, "rb") as f:
                variables = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except (OSError, ValueError):
            continue
        config = variables.get(distribution.TF_CONFIG_ENV.encode())
        if config and json.loads(config)["task"]["index"] == index:
            return pid
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory, vocab_path) -> Runs:
    base = tmp_path_factory.mktemp("distributed")
    windows = str(base / "windows.gz")
    with tf.io.TFRecordWriter(windows, options="GZIP") as writer:
        for i in range(64):
            writer.write(window_to_tf_example(_window(i)).SerializeToString())
    tokenizer = str(base / "tokenizer")
    write_tokenizer_artifact(TransformConfig(vocab_path, True, WindowConfig()), tokenizer)

    reference_root = base / "one-process"
    _run_fn(_fn_args(reference_root, 1, windows, tokenizer))

    root = base / "two-workers"
    killed = {}

    def killed_run():
        try:
            _run_fn(_fn_args(root, 1, windows, tokenizer, train_workers=2))
        except BaseException as error:  # noqa: BLE001 (handed to the test)
            killed["error"] = error

    thread = threading.Thread(target=killed_run)
    thread.start()
    deadline = time.monotonic() + 900
    while not glob.glob(str(root / "Trainer" / "checkpoints" / "*" / f"ckpt-{CHECKPOINT_EVERY}.index")):
        assert thread.is_alive(), f"the two-worker run ended before its first checkpoint: {killed}"
        assert time.monotonic() < deadline, "no checkpoint within 900 s"
        time.sleep(0.05)
    pid = _worker_pid(1)
    assert pid is not None, "worker 1's process was not found"
    os.kill(pid, signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive(), "run_fn did not return after its worker was killed"
    checkpoint_steps = sorted(int(p.rsplit("-", 1)[1].split(".")[0])
                              for p in glob.glob(str(root / "Trainer" / "checkpoints" / "*" / "ckpt-*.index")))

    # Started again as a Vertex AI job's replicas run it: every task calls run_fn with its
    # TF_CONFIG and the same FnArgs (the same output directories, on storage both see).
    ports = child_process.free_loopback_ports(2)
    processes, logs = [], []
    for index in (0, 1):
        env = dict(os.environ, **{distribution.TF_CONFIG_ENV: distribution.local_cluster_config(ports, index)},
                   PYTHONPATH=str(REPO))
        log = base / f"task-{index}.log"
        logs.append(log)
        with open(log, "w") as out:
            processes.append(subprocess.Popen(
                [sys.executable, TASKS, "run_fn", json.dumps(_fn_args(root, 2, windows, tokenizer))],
                env=env, stdout=out, stderr=subprocess.STDOUT))
    for process, log in zip(processes, logs, strict=True):
        try:
            code = process.wait(900)
        finally:
            for other in processes:
                if other.poll() is None and process.returncode not in (None, 0):
                    other.kill()
        assert code == 0, f"{log.name} ended with {code}:\n{log.read_text()[-3000:]}"
    trainer = root / "Trainer"
    return Runs(root=root, reference=reference_root / "Trainer" / "model" / "1" / "Format-Serving",
                reference_run=reference_root / "Trainer" / "model_run" / "1",
                killed_error=killed.get("error"), killed_checkpoint_steps=checkpoint_steps,
                serving=trainer / "model" / "2" / "Format-Serving", model_run=trainer / "model_run" / "2",
                task_logs=[log.read_text() for log in logs],
                checkpoints_left=os.listdir(trainer / "checkpoints"))


def _saved_weights(serving_dir: pathlib.Path) -> dict:
    reader = tf.train.load_checkpoint(str(serving_dir / "variables" / "variables"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "dropout_seeds" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _summary(serving_dir: pathlib.Path) -> dict:
    return json.loads((serving_dir.parent / "training_summary.json").read_text())


@pytest.mark.e2e
def test_a_killed_worker_fails_the_run_with_one_message_naming_it_and_how_to_resume(runs):
    assert isinstance(runs.killed_error, child_process.TrainerProcessError), runs.killed_error
    message = str(runs.killed_error)
    assert "training worker 1 of 2 was killed by signal 9" in message
    assert "the other workers were stopped" in message and "Run the pipeline again" in message
    assert runs.killed_checkpoint_steps and max(runs.killed_checkpoint_steps) < STEPS


@pytest.mark.e2e
def test_started_again_the_cluster_resumes_from_the_chiefs_checkpoint_and_trains_only_the_rest(runs):
    summary = _summary(runs.serving)
    assert summary["resumed_from_step"] == max(runs.killed_checkpoint_steps) > 0
    assert summary["steps_trained"] == STEPS
    assert (summary["workers"], summary["replicas"]) == (2, 2)
    assert runs.checkpoints_left == []  # the export removed the resume checkpoints


@pytest.mark.e2e
def test_only_the_chief_writes_the_saved_model_the_summary_and_the_logs(runs):
    assert (runs.serving / "saved_model.pb").exists()
    assert _summary(runs.serving)["exported_by"] == "worker 0"
    # One writer of TensorBoard logs (a second would leave a second events file).
    assert len(glob.glob(str(runs.model_run / "**" / "events.out.tfevents.*"), recursive=True)) == 1
    chief, other = runs.task_logs
    assert "not the chief" in other and "not the chief" not in chief


@pytest.mark.e2e
def test_two_workers_killed_and_resumed_end_with_the_weights_one_process_reaches_on_the_same_batches(runs):
    reference, distributed = _saved_weights(runs.reference), _saved_weights(runs.serving)
    assert sorted(reference) == sorted(distributed) and len(reference) > 10
    for name, expected in reference.items():
        np.testing.assert_allclose(distributed[name], expected, rtol=RTOL, atol=ATOL, err_msg=name)
    one = _summary(runs.reference)
    assert (one["steps_trained"], one["workers"], one["replicas"]) == (STEPS, 1, 1)


@pytest.mark.e2e
def test_the_logged_loss_is_the_clusters_not_its_sum_over_the_workers(runs):
    # Keras's "auto" sums the logs' values over MultiWorkerMirroredStrategy's workers, though
    # its metrics are already the cluster's: two workers logged twice one process's loss
    # (6.857 against 3.428 at step 20, measured with the runs above).
    from bertqa.operations import report_data

    one = {p.step: p.loss for p in report_data.read_training_curve(str(runs.reference_run))}
    two = {p.step: p.loss for p in report_data.read_training_curve(str(runs.model_run))}
    # TrainingMonitor logs every 20 steps and at the last: the interval ending at step STEPS
    # covers steps 21..STEPS in both runs only if the two workers resumed at or before step 20.
    assert _summary(runs.serving)["resumed_from_step"] <= 20
    assert STEPS in one and STEPS in two, (one, two)
    # The same batches on weights that agree within 2e-6 (RTOL, ATOL above): the mean loss of
    # those 10 steps differs only by float32 rounding (measured 3.2644310 against 3.2644300,
    # 3e-7 relative), so 1e-4 relative has room for other machines' rounding, while the sum
    # over the two workers that this guards against is off by 100%.
    assert two[STEPS] == pytest.approx(one[STEPS], rel=1e-4)


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    windows = str(out / "windows.gz")
    with tf.io.TFRecordWriter(windows, options="GZIP") as writer:
        for i in range(64):
            writer.write(window_to_tf_example(_window(i)).SerializeToString())
    done = subprocess.run([sys.executable, TASKS, "mirrored", windows, "12", str(out)], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.e2e
def test_mirrored_strategy_over_two_logical_cpus_ends_with_the_default_strategys_weights(mirrored):
    out, result = mirrored
    assert result["replicas"] == 2 and len(result["devices"]) == 2
    assert result["default"]["replicas"] == 1 and result["mirrored"]["replicas"] == 2
    assert result["default"]["iterations"] == result["mirrored"]["iterations"] == 12
    assert result["mirrored"]["loss"] == pytest.approx(result["default"]["loss"], rel=1e-4)
    default, replicated = np.load(out / "default.npz"), np.load(out / "mirrored.npz")
    for key in default.files:
        np.testing.assert_allclose(replicated[key], default[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.e2e
def test_under_mirrored_strategy_replicas_draw_their_own_dropout_masks_from_one_counter(mirrored):
    _, result = mirrored
    assert result["dropout_masks_differ"]
    step = result["dropout_step_per_replica"]
    assert len(step) == 2 and step[0] == step[1] >= 3


@pytest.mark.e2e
def test_model_makers_mirrored_strategy_with_num_gpus_trains_over_that_many_devices(mirrored):
    _, result = mirrored
    assert result["model_maker_replicas"] == {"model": 2, "fit": 2, "variable_copies": 2}
    assert result["model_maker_iterations"] == result["model_maker_steps_expected"] > 0


def test_tf_config_decides_the_cluster_role():
    assert distribution.cluster_role("") is None
    single = json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}})
    assert distribution.cluster_role(single) is None
    worker = distribution.cluster_role(distribution.local_cluster_config([1, 2, 3], 0))
    assert (worker.num_workers, worker.is_chief) == (3, True)
    assert not distribution.cluster_role(distribution.local_cluster_config([1, 2, 3], 2)).is_chief
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]}}
    assert distribution.cluster_role(json.dumps({**with_chief, "task": {"type": "chief", "index": 0}})).is_chief
    role = distribution.cluster_role(json.dumps({**with_chief, "task": {"type": "worker", "index": 0}}))
    assert role.num_workers == 3 and not role.is_chief
    with pytest.raises(ValueError, match="'evaluator'"):
        distribution.cluster_role(json.dumps({**with_chief, "task": {"type": "evaluator", "index": 0}}))
    with pytest.raises(ValueError, match="not a JSON object"):
        distribution.cluster_role("{not json")


def test_a_global_batch_that_does_not_divide_among_the_replicas_is_refused_with_what_to_choose():
    assert distribution.per_replica_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match="batch size 30 does not divide among 4 replicas: choose a multiple of 4"):
        distribution.per_replica_batch_size(30, 4)


def test_each_replica_gets_its_own_slice_of_every_global_batch_in_order():
    batches = tf.data.Dataset.from_tensor_slices(({"x": tf.reshape(tf.range(24), [3, 8])},
                                                  {"y": tf.reshape(tf.range(24), [3, 8])})).map(
        lambda f, label: ({"x": tf.reshape(f["x"], [8])}, label))
    # Pipeline 1 of 2 with two local replicas each (4 replicas of 2): replicas 2 and 3.
    got = [f["x"].numpy().tolist() for f, _ in distribution.replica_slices(batches, 2, 2, 2)]
    assert got == [[4, 5], [6, 7], [12, 13], [14, 15], [20, 21], [22, 23]]


def test_local_runner_train_workers_reach_the_trainers_custom_config_and_zero_is_refused(capsys):
    import local_runner
    from pipeline.pipeline import create_pipeline

    config = local_runner.build_config(local_runner.parse_args(["--train-workers", "2"]))
    assert config.train_workers == 2
    trainer = next(c for c in create_pipeline(config).components if c.id == "Trainer")
    # TFX keeps custom_config as JSON text.
    assert json.loads(trainer.exec_properties["custom_config"])["train_workers"] == 2
    one = next(c for c in create_pipeline(local_runner.build_config(local_runner.parse_args([]))).components
               if c.id == "Trainer")
    assert "train_workers" not in str(one.exec_properties["custom_config"])  # specs compiled before stay as they were
    with pytest.raises(SystemExit):
        local_runner.parse_args(["--train-workers", "0"])
    assert "0 is not a positive number" in capsys.readouterr().err
