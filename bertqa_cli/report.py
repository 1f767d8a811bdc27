"""`bertqa report RUN_DIR`: regenerate a run's report from ML Metadata and the artifacts.

    bertqa report runs/bertqa                 # -> runs/bertqa/report/report.html
    bertqa report runs/bertqa --output-dir /tmp/report

RUN_DIR is a pipeline's directory (the one with metadata.sqlite); the report is that of the
latest run that reached RunReporter, rebuilt from the same artifacts the component read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

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


def latest_reporter_inputs(store) -> tuple[dict, dict]:
    """The latest RunReporter execution's input artifacts (by key) and execution properties."""
    from bertqa.operations import metadata_store

    nodes = [c for c in store.get_contexts_by_type("node") if c.name.split(".")[-1] == REPORTER_NODE]
    executions = [e for c in nodes for e in store.get_executions_by_context(c.id)]
    if not executions:
        raise ReportError(f"no {REPORTER_NODE} execution recorded (the pipeline did not get that far; run it again)")
    latest = max(executions, key=lambda e: e.id)
    inputs = metadata_store.execution_inputs(store, latest.id)
    return ({key: artifacts[0] for key, artifacts in inputs.items() if artifacts},
            metadata_store.execution_properties(latest))


def run_artifacts_from_store(path: str):
    from bertqa.operations import metadata_store
    from components.run_reporter import core

    store = metadata_store.sqlite_store(path)
    inputs, properties = latest_reporter_inputs(store)
    missing = sorted({"examples", "transformed_examples", "model", "model_run", "evaluation", "evaluator_blessing",
                      "exported_model", "export_blessing", "pushed_model"} - set(inputs))
    if missing:
        raise ReportError(f"{path}: the latest {REPORTER_NODE} execution has no input {', '.join(missing)}")

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
    args = parser.parse_args(argv)
    try:
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
