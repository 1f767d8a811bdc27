"""`bertqa kfp`: what can be checked without a Kubeflow Pipelines server.

The package that `run` and `schedule` upload is the one kubeflow_runner.py writes; that kfp.Client's own
package loading accepts it is tested in tests/test_kubeflow_compile.py. Uploading, creating runs and
recurring runs need a server and are not tested here.
"""

import pathlib
import subprocess
import sys
import time

import pytest
from google.protobuf import json_format
from tfx.proto import range_config_pb2

import kubeflow_runner
from bertqa_cli import kfp_client

BERTQA = str(pathlib.Path(sys.executable).parent / "bertqa")
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens


def _bertqa(*args, timeout=60):
    started = time.monotonic()
    result = subprocess.run([BERTQA, *args], capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


@pytest.mark.parametrize("command", [["run"], ["schedule", "--cron", "0 0 3 * * *"]])
def test_unreachable_host_fails_at_once_with_one_line_naming_it(command):
    result, seconds = _bertqa("kfp", *command, "--host", UNREACHABLE)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach Kubeflow Pipelines at http://127.0.0.1:9")
    assert seconds < 15  # no retry loop (kfp.Client's own health check retries 5 times, 5 s apart)


def test_a_cron_line_without_seconds_is_refused_before_the_host_is_tried():
    result, _ = _bertqa("kfp", "schedule", "--cron", "0 3 * * *", "--host", UNREACHABLE)
    assert result.returncode == 2
    assert "six fields, seconds first" in result.stderr and "127.0.0.1" not in result.stderr


def test_no_host_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    assert kfp_client.main(["run", "--package", "p.yaml"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: no Kubeflow Pipelines host: pass --host http://HOST:PORT or set KF_PIPELINES_ENDPOINT")


def test_span_becomes_the_range_config_parameter_tfx_parses():
    args = kfp_client._parser().parse_args(["run", "--span", "3", "--param", "data_root=gs://b/d"])
    params = kfp_client.run_parameters(args)
    assert params["data_root"] == "gs://b/d"
    range_config = json_format.Parse(params["range_config"], range_config_pb2.RangeConfig())
    assert range_config.static_range.start_span_number == range_config.static_range.end_span_number == 3
    with pytest.raises(kfp_client.KfpError, match="NAME=VALUE"):
        kfp_client.run_parameters(kfp_client._parser().parse_args(["run", "--param", "novalue"]))
    assert kfp_client.run_parameters(kfp_client._parser().parse_args(["run"])) == {}


def test_run_options_and_compile_options_are_told_apart():
    argv = ["run", "--host", "http://kfp:8888", "--experiment", "nightly", "--pipeline-root", "gs://b/root",
            "--data-root", "gs://b/data", "--serving-dir", "gs://b/serving", "--train-steps", "9", "--span", "2"]
    args, rest = kfp_client._parser().parse_known_args(argv)
    assert (args.host, args.experiment, args.span) == ("http://kfp:8888", "nightly", 2)
    compile_args = kubeflow_runner.parse_args(rest)
    assert (compile_args.target, compile_args.pipeline_root, compile_args.train_steps) == ("kfp", "gs://b/root", 9)
