"""`bertqa report RUN_DIR`: regenerate a run's report from ML Metadata and the artifacts.

    bertqa report runs/bertqa                 # -> runs/bertqa/report/report.html
    bertqa report runs/bertqa --output-dir /tmp/report

RUN_DIR is a pipeline's directory (the one with metadata.sqlite); the report is that of the
latest run that reached RunReporter, rebuilt from the same artifacts the component read. With
--metadata-mysql (password from BERTQA_METADATA_PASSWORD) the runs recorded on that server: the
latest one whose report belongs in RUN_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bertqa.operations import metadata_store

METADATA_FILE = "metadata.sqlite"
REPORTER_NODE = "RunReporter"


class ReportError(Exception):
    """A run directory that has no report to regenerate (no store, no RunReporter execution)."""


def metadata_file(run_dir: str) -> str:
    candidates = [os.path.join(run_dir, METADATA_FILE)]
    if os.path.isdir(run_dir):  # a runs directory holding one pipeline's directory
        candidates += [os.path.join(run_dir, name, METADATA_FILE) for name in sorted(os.listdir(run_dir))]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ReportError(f"{run_dir}: no {METADATA_FILE} here (give the pipeline's run directory, e.g. runs/bertqa, "
                      "after `make run`)")


def latest_reporter_inputs(store, run_ids: set[str] | None = None) -> tuple[dict, dict]:
    """The latest RunReporter execution's input artifacts (by key) and execution properties; with
    `run_ids`, the latest of those pipeline runs (a shared server's store holds other directories' too)."""
    nodes = [c for c in store.get_contexts_by_type("node") if c.name.split(".")[-1] == REPORTER_NODE]
    executions = [e for c in nodes for e in store.get_executions_by_context(c.id)]
    if run_ids is not None:
        ours = {e.id for c in metadata_store.run_context_ids(store, run_ids)
                for e in store.get_executions_by_context(c)}
        executions = [e for e in executions if e.id in ours]
    if not executions:
        raise ReportError(f"no {REPORTER_NODE} execution recorded (the pipeline did not get that far; run it again)")
    latest = max(executions, key=lambda e: e.id)
    inputs = metadata_store.execution_inputs(store, latest.id)
    return ({key: artifacts[0] for key, artifacts in inputs.items() if artifacts},
            metadata_store.execution_properties(latest))


def server_run_ids(run_dir: str) -> set[str]:
    """The pipeline runs started from RUN_DIR (the local runner lists them when its store is a server)."""
    run_ids = metadata_store.started_runs(run_dir)
    if not run_ids:
        raise ReportError(f"{run_dir}: no {metadata_store.RUNS_FILE} here: no run from this directory recorded on "
                          "a metadata server (give the pipeline's run directory, e.g. runs/bertqa)")
    return run_ids


def run_artifacts_from_store(path: str, server=None, run_dir: str | None = None):
    """The latest report's artifacts from the SQLite file at `path`, or from `server`
    (bertqa.operations.metadata_store.MySqlStore) for the runs started from `run_dir`."""
    from components.run_reporter import core

    try:
        store = metadata_store.open_store(server or metadata_store.SqliteStore(path))
    except metadata_store.MetadataStoreError as error:
        raise ReportError(str(error)) from None
    inputs, properties = latest_reporter_inputs(store, server_run_ids(run_dir) if server else None)
    missing = sorted({"examples", "transformed_examples", "model", "model_run", "evaluation", "evaluator_blessing",
                      "exported_model", "export_blessing", "pushed_model"} - set(inputs))
    if missing:
        raise ReportError(f"{server.describe() if server else path}: the latest {REPORTER_NODE} execution has no "
                          f"input {', '.join(missing)}")

    def props(key):
        return metadata_store.custom_properties(inputs[key])

    artifacts = core.RunArtifacts(
        examples_dir=inputs["examples"].uri, windows_dir=inputs["transformed_examples"].uri,
        model_dir=inputs["model"].uri, model_run_dir=inputs["model_run"].uri,
        evaluation_dir=inputs["evaluation"].uri, exported_model_dir=inputs["exported_model"].uri,
        examples_properties=props("examples"), evaluator_blessing=props("evaluator_blessing"),
        export_blessing=props("export_blessing"), pushed_model=props("pushed_model"),
        settings=json.loads(properties.get("settings") or "{}"))
    return artifacts, bool(properties.get("version_2_with_negative"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bertqa report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the pipeline's run directory (holds metadata.sqlite), e.g. runs/bertqa")
    parser.add_argument("--output-dir", default=None, help="where to write (default: RUN_DIR/report)")
    metadata_store.add_metadata_server_arg(parser)
    args = parser.parse_args(argv)
    try:
        if args.metadata_mysql:
            path = os.path.join(args.run_dir, METADATA_FILE)  # not read: it names RUN_DIR for the output
            artifacts, version_2 = run_artifacts_from_store(path, args.metadata_mysql, args.run_dir)
        else:
            path = metadata_file(args.run_dir)
            artifacts, version_2 = run_artifacts_from_store(path)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from components.run_reporter import core

    report = core.build_report(artifacts, version_2)
    output_dir = args.output_dir or os.path.join(os.path.dirname(path), "report")
    files = core.write_report(report, output_dir, model_location=artifacts.model_dir,
                              data_location=artifacts.examples_dir)
    print(f"report: {files.report}" + (f" (and {files.beside_pushed_model})" if files.beside_pushed_model else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
