"""`bertqa kfp compile|run|schedule`: the pipeline on open-source Kubeflow Pipelines, through kfp.Client.

    bertqa kfp compile --pipeline-root ... --data-root ... --serving-dir ... --image ... [--output F.yaml]
    bertqa kfp run --host http://HOST:8888 [--experiment E] [--namespace N] [--param NAME=VALUE] [--span N]
                   (--package F.yaml | kubeflow_runner options)
    bertqa kfp schedule --cron '0 0 3 * * *' --host ... (same options as run)

`compile` is `python kubeflow_runner.py` (default target kfp). `run` and `schedule` compile the
package (or take --package), upload it as a pipeline (a new version of it when the pipeline
already exists; the same version again when its content has not changed), then create a run, or a
recurring run with max_concurrency=1 and no catch-up (one retraining at a time; a scheduler that
was paused starts the next run, not one per missed slot). The cron expression has six fields,
seconds first (KFP's format): '0 0 3 * * *' is every day at 03:00.

The host is checked with one request before kfp.Client is made: the client retries its health
check five times, five seconds apart, when it cannot connect.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings

HEALTHZ = "/apis/v2beta1/healthz"
PROBE_TIMEOUT_S = 5.0


class KfpError(RuntimeError):
    """What to tell the user in one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertqa kfp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("compile", help="write the pipeline package (kubeflow_runner.py options)", add_help=False)
    for name, help_text in (("run", "submit one run"), ("schedule", "create a recurring run")):
        sub = commands.add_parser(name, help=help_text, allow_abbrev=False)
        sub.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"),
                         help="the KFP API endpoint, e.g. http://localhost:8888 (default: $KF_PIPELINES_ENDPOINT)")
        sub.add_argument("--experiment", default="bertqa")
        sub.add_argument("--namespace", default=None, help="the Kubernetes namespace (multi-user deployments)")
        sub.add_argument("--pipeline", default=None, help="the pipeline's name in KFP (default: the spec's name)")
        sub.add_argument("--package", default=None,
                         help="a package written by `bertqa kfp compile`; without it the remaining options are "
                              "kubeflow_runner.py's and the package is compiled first")
        sub.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="a pipeline parameter for this run (data_root, train_args, range_config)")
        sub.add_argument("--span", type=int, default=None, help="read this span (sets the range_config parameter)")
        sub.add_argument("--run-name", default=None)
        if name == "schedule":
            sub.add_argument("--cron", required=True, help="six fields, seconds first: '0 0 3 * * *'")
    return parser


def run_parameters(args: argparse.Namespace) -> dict:
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise KfpError(f"--param {item!r}: expected NAME=VALUE")
        params[name] = value
    if args.span is not None:
        params["range_config"] = json.dumps(
            {"static_range": {"start_span_number": args.span, "end_span_number": args.span}})
    return params


def check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 6:
        raise KfpError(f"--cron {expression!r}: Kubeflow Pipelines wants six fields, seconds first "
                       "(e.g. '0 0 3 * * *' for 03:00 every day)")
    return expression


def check_reachable(host: str | None, timeout: float = PROBE_TIMEOUT_S) -> str:
    """One request to the host's health endpoint; any HTTP answer counts as reachable."""
    if not host:
        raise KfpError("no Kubeflow Pipelines host: pass --host http://HOST:PORT or set KF_PIPELINES_ENDPOINT")
    url = host.rstrip("/") + HEALTHZ
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered (e.g. 401 behind an auth proxy): kfp.Client deals with that
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise KfpError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None
    return host


def compile_package(kubeflow_runner_args: list[str], output: str | None = None) -> str:
    import kubeflow_runner

    args = kubeflow_runner.parse_args(kubeflow_runner_args + (["--output", output] if output else []))
    if args.target != "kfp":
        raise KfpError("bertqa kfp run/schedule submit to open-source Kubeflow Pipelines: use --target kfp")
    return kubeflow_runner.compile_pipeline(args)


def _client(args: argparse.Namespace):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import kfp

        kwargs = {"namespace": args.namespace} if args.namespace else {}
        return kfp.Client(host=args.host, **kwargs)


def _display_name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def upload(client, package: str, pipeline_name: str) -> tuple[str, str]:
    """(pipeline id, version id): the pipeline uploaded, or a version of it, reused when unchanged."""
    with open(package, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    version_name = f"{pipeline_name}-{digest}"
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(package, pipeline_name=pipeline_name).pipeline_id
    versions = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_display_name_filter(version_name))
    if versions.pipeline_versions:
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    version = client.upload_pipeline_version(package, version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def submit(args: argparse.Namespace, package: str) -> str:
    from kfp.client import client as kfp_client_module

    params = run_parameters(args)
    cron = args.cron if args.command == "schedule" else None
    pipeline_name = args.pipeline or kfp_client_module._extract_pipeline_yaml(package).pipeline_spec.pipeline_info.name
    client = _client(args)
    experiment = client.create_experiment(args.experiment, namespace=args.namespace)
    pipeline_id, version_id = upload(client, package, pipeline_name)
    job_name = args.run_name or pipeline_name
    if cron is None:
        run = client.run_pipeline(experiment_id=experiment.experiment_id, job_name=job_name, params=params,
                                  pipeline_id=pipeline_id, version_id=version_id)
        return f"run {run.run_id} of {pipeline_name} ({version_id}) in experiment {args.experiment} at {args.host}"
    recurring = client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name=job_name, cron_expression=cron, max_concurrency=1,
        no_catchup=True, params=params, pipeline_id=pipeline_id, version_id=version_id)
    return (f"recurring run {recurring.recurring_run_id} of {pipeline_name} ({version_id}), cron '{cron}', "
            f"in experiment {args.experiment} at {args.host}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compile"]:
        import kubeflow_runner

        return kubeflow_runner.main(argv[1:])
    args, rest = _parser().parse_known_args(argv)
    try:
        # Before anything slow (compiling takes most of a minute): the options, then the host.
        run_parameters(args)
        if args.command == "schedule":
            check_cron(args.cron)
        check_reachable(args.host)
        if args.package:
            if rest:
                raise KfpError(f"--package {args.package}: no compile options expected, got {' '.join(rest)}")
            package = args.package
            return _report(submit(args, package))
        with tempfile.TemporaryDirectory() as tmp:
            package = compile_package(rest, os.path.join(tmp, "pipeline.yaml"))
            return _report(submit(args, package))
    except KfpError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 (the server's answer, in one line)
        from kfp_server_api.exceptions import ApiException

        if isinstance(error, ApiException):
            print(f"error: Kubeflow Pipelines at {args.host} answered {error.status} {error.reason}: "
                  f"{(error.body or '').strip()[:300]}", file=sys.stderr)
            return 2
        raise


def _report(line: str) -> int:
    print(line)
    return 0
