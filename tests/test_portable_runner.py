"""The pipeline's Beam components on Beam's portable runner make what the DirectRunner makes.

Beam's job service and an external worker pool run here as subprocesses on loopback: the job API
and Fn API contract that Flink, Spark and Dataflow implement (docs/scaling-beam.md). The pipeline's
Beam part (pipeline.create_data_pipeline: SquadExampleGen, StatisticsGen, SchemaGen,
ExampleValidator, BertQATransform) runs on the tiny fixtures twice, once with local_runner's
default DirectRunner flags and once with `--beam-arg`s for the portable runner, and the examples,
statistics, windows and window report must be the same.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

import local_runner

pytestmark = pytest.mark.e2e

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA_ARGS = ["--train-pattern", "tiny_train.json", "--eval-pattern", "tiny_eval.json", "--spec", "tiny_random",
             "--no-cache"]
SPLITS = ("train", "eval")
# The components whose executors run Beam pipelines (SchemaGen and ExampleValidator do not), each
# known in the job service by a transform that only its Beam pipeline has.
BEAM_JOBS = {"SquadExampleGen": "WriteSplit[train]", "StatisticsGen": "GenerateStatistics[train]",
             "BertQATransform": "Windows[train]"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: pathlib.Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("localhost", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s:\n{log.read_text()}")


@dataclasses.dataclass(frozen=True)
class BeamServices:
    job_port: int
    pool_port: int
    pool_log: pathlib.Path

    def beam_args(self) -> list[str]:
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_port}",
                "--sdk_worker_parallelism=1"]

    def jobs(self) -> list:
        """(job info, pipeline proto) of every job the job service has run, from its job API."""
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

        with grpc.insecure_channel(f"localhost:{self.job_port}") as channel:
            stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
            infos = stub.GetJobs(beam_job_api_pb2.GetJobsRequest()).job_info
            return [(info, stub.GetPipeline(beam_job_api_pb2.GetJobPipelineRequest(job_id=info.job_id)).pipeline)
                    for info in infos]


@pytest.fixture(scope="module")
def beam_services(tmp_path_factory):
    """Beam's job service and worker pool, each in a process group of its own (the pool's workers join
    the pool's), ended with it."""
    logs = tmp_path_factory.mktemp("beam_services")
    # The pool starts each SDK worker as a bare `python -c ...`: this interpreter's venv first on
    # PATH, and the project importable, as an installed package would be in a worker container.
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    job_port, pool_port = _free_port(), _free_port()
    commands = {
        "job_service": [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                        "--port", str(job_port)],
        "worker_pool": [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                        "--service_port", str(pool_port)],
    }
    processes = {}
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                                   start_new_session=True)
        _wait_for_port(job_port, processes["job_service"], logs / "job_service.log")
        _wait_for_port(pool_port, processes["worker_pool"], logs / "worker_pool.log")
        yield BeamServices(job_port, pool_port, logs / "worker_pool.log")
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _run_data_pipeline(runs_dir: pathlib.Path, data_dir: pathlib.Path, beam_args: list[str]):
    from tfx import v1 as tfx

    from pipeline.pipeline import create_data_pipeline

    args = ["--runs-dir", str(runs_dir), "--data-dir", str(data_dir), *DATA_ARGS,
            *(f"--beam-arg={arg}" for arg in beam_args)]
    config = local_runner.build_config(local_runner.parse_args(args))
    os.makedirs(os.path.dirname(local_runner.metadata_path(config)), exist_ok=True)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(local_runner.metadata_path(config))
    tfx.orchestration.LocalDagRunner().run(create_data_pipeline(config, connection))
    return config


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory, fixtures_dir):
    return _run_data_pipeline(tmp_path_factory.mktemp("direct"), fixtures_dir, [])


@pytest.fixture(scope="module")
def portable_run(tmp_path_factory, fixtures_dir, beam_services):
    jobs_before = len(beam_services.jobs())
    config = _run_data_pipeline(tmp_path_factory.mktemp("portable"), fixtures_dir, beam_services.beam_args())
    return config, beam_services.jobs()[jobs_before:]


def _outputs(config) -> dict:
    """{(component, artifact type): artifact} of the run's data pipeline, from its ML Metadata store."""
    from bertqa.operations import metadata_store

    store = metadata_store.sqlite_store(local_runner.metadata_path(config))
    outputs = {}
    for type_name in ("Examples", "ExampleStatistics", "ExampleAnomalies", "TransformGraph"):
        for artifact in store.get_artifacts_by_type(type_name):
            outputs[(metadata_store.producer_component(store, artifact.id), type_name)] = artifact
    return outputs


def _records(artifact, split: str) -> collections.Counter:
    """The split's tf.Examples, each serialized canonically, with their counts: the bytes as written differ
    between processes, in the order of the features map."""
    import tensorflow as tf

    from bertqa.model.evaluation import read_records

    return collections.Counter(tf.train.Example.FromString(record).SerializeToString(deterministic=True)
                               for record in read_records(os.path.join(artifact.uri, f"Split-{split}", "*")))


def _statistics(artifact, split: str) -> dict:
    """What TFDV computes exactly, per feature (histograms, quantiles and top values are left out:
    they are approximate, and their ties may order either way)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    path = pathlib.Path(artifact.uri, f"Split-{split}", "FeatureStats.pb")
    (dataset,) = statistics_pb2.DatasetFeatureStatisticsList.FromString(path.read_bytes()).datasets
    features = {}
    for feature in dataset.features:
        stats = feature.num_stats if feature.HasField("num_stats") else feature.string_stats
        common = stats.common_stats
        features[".".join(feature.path.step)] = {
            "type": feature.type, "num_non_missing": common.num_non_missing, "num_missing": common.num_missing,
            "min_num_values": common.min_num_values, "max_num_values": common.max_num_values,
            "tot_num_values": common.tot_num_values,
            **({"min": stats.min, "max": stats.max, "mean": round(stats.mean, 6), "num_zeros": stats.num_zeros}
               if feature.HasField("num_stats") else
               {"unique": stats.unique, "avg_length": round(stats.avg_length, 6)}),
        }
    return {"num_examples": dataset.num_examples, "features": features}


def test_the_data_pipeline_is_the_full_pipeline_cut_before_the_trainer(tmp_path):
    from pipeline.pipeline import create_data_pipeline, create_pipeline

    config = local_runner.build_config(local_runner.parse_args(
        ["--runs-dir", str(tmp_path), *DATA_ARGS, "--beam-arg=--runner=PortableRunner"]))
    data, full = create_data_pipeline(config), create_pipeline(config)
    data_ids = {c.id for c in data.components}
    assert data_ids == {*BEAM_JOBS, "SchemaGen", "ExampleValidator"}
    assert data_ids < {c.id for c in full.components}
    assert data.beam_pipeline_args == full.beam_pipeline_args == ["--runner=PortableRunner"]
    assert (data.pipeline_info.pipeline_root, data.enable_cache) == (full.pipeline_info.pipeline_root, False)


def test_each_beam_component_ran_as_a_job_of_the_job_service_in_external_workers(portable_run, beam_services):
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_job_api_pb2, beam_runner_api_pb2

    _, jobs = portable_run
    assert len(jobs) == len(BEAM_JOBS)
    components = {}
    for info, pipeline in jobs:
        names = {transform.unique_name for transform in pipeline.components.transforms.values()}
        (component,) = [c for c, marker in BEAM_JOBS.items() if marker in names]
        components[component] = info.state
        environments = {env.urn: env for env in pipeline.components.environments.values()}
        assert set(environments) == {common_urns.environments.EXTERNAL.urn}
        payload = beam_runner_api_pb2.ExternalPayload.FromString(
            environments[common_urns.environments.EXTERNAL.urn].payload)
        assert payload.endpoint.url == f"localhost:{beam_services.pool_port}"
    assert components == dict.fromkeys(BEAM_JOBS, beam_job_api_pb2.JobState.DONE)
    # The pool started an SDK worker process (`python -c ... SdkHarness(...)`) for each job.
    started = beam_services.pool_log.read_text().count("Starting worker with command")
    assert started >= len(BEAM_JOBS)


@pytest.mark.parametrize("split", SPLITS)
def test_squad_example_gen_writes_the_same_examples(direct_run, portable_run, split):
    key = ("SquadExampleGen", "Examples")
    expected = _records(_outputs(direct_run)[key], split)
    assert sum(expected.values()) > 0
    assert _records(_outputs(portable_run[0])[key], split) == expected


def test_squad_example_gen_counts_the_same_questions(direct_run, portable_run):
    from bertqa.operations import metadata_store

    key = ("SquadExampleGen", "Examples")
    names = ("questions_in", "questions_kept", "questions_repaired", "questions_dropped", "span")
    direct, portable = (metadata_store.custom_properties(_outputs(run)[key]) for run in (direct_run, portable_run[0]))
    assert direct["questions_kept"] > 0
    assert {n: portable[n] for n in names} == {n: direct[n] for n in names}


@pytest.mark.parametrize("split", SPLITS)
def test_statistics_gen_computes_the_same_statistics(direct_run, portable_run, split):
    key = ("StatisticsGen", "ExampleStatistics")
    expected = _statistics(_outputs(direct_run)[key], split)
    assert expected["num_examples"] > 0 and expected["features"]
    assert _statistics(_outputs(portable_run[0])[key], split) == expected


@pytest.mark.parametrize("split", SPLITS)
def test_bert_qa_transform_writes_the_same_windows(direct_run, portable_run, split):
    key = ("BertQATransform", "Examples")
    direct, portable = _outputs(direct_run)[key], _outputs(portable_run[0])[key]
    expected = _records(direct, split)
    assert sum(expected.values()) > 0
    assert _records(portable, split) == expected


def test_bert_qa_transform_reports_the_same_windows_and_questions(direct_run, portable_run):
    from bertqa.operations import metadata_store

    key = ("BertQATransform", "Examples")
    direct, portable = _outputs(direct_run)[key], _outputs(portable_run[0])[key]
    report = json.loads(pathlib.Path(direct.uri, "window_report.json").read_text())
    assert set(report) == set(SPLITS) and all(report[split]["windows"] > 0 for split in SPLITS)
    assert json.loads(pathlib.Path(portable.uri, "window_report.json").read_text()) == report
    names = [f"{split}_{count}" for split in SPLITS for count in ("windows", "questions")]
    direct_props, portable_props = metadata_store.custom_properties(direct), metadata_store.custom_properties(portable)
    assert {n: portable_props[n] for n in names} == {n: direct_props[n] for n in names}
