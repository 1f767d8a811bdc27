"""Runs a compiled KFP v2 PipelineSpec task by task, as KFP's driver and launcher would: test code only.

No Kubernetes cluster or KFP backend can run here, and kfp.local (2.5) runs single lightweight
Python components only. This runner does the part of KFP's work that decides whether the
compiled spec itself runs, and nothing else:

  - reads the spec (a PipelineSpec YAML, or a PipelineJob JSON), orders the root DAG's tasks by
    `dependentTasks`;
  - builds each task's ExecutorInput JSON: parameters from the task's `runtimeValue.constant`
    (schema 2.1, into `parameterValues`; with schema 2.0, `runtimeValue.constantValue` into
    `parameters`) or from pipeline parameters (`componentInputParameter`: a value given to the run,
    else the root input's `defaultValue`); input artifacts from the producing task's outputs, with
    the uri and metadata that its ExecutorOutput returned (KFP records them in its ML Metadata and
    hands them on, typed by schema title); output artifacts typed as the component declares them,
    with uris under the pipeline root (<root>/<run id>/<task>/<output>); and `outputs.outputFile`;
  - substitutes `{{$}}` (the whole ExecutorInput) in the container command, refusing any other
    placeholder, and runs the task's own command (`python -m
    tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...`) in a subprocess with
    this interpreter (the project installed in it), the repository as cwd and on PYTHONPATH;
  - with run_driver=True (Vertex AI), first runs a task's `lifecycle.preCacheCheck` command (TFX's
    FileBasedExampleGen driver) with the same ExecutorInput and folds the parameters and output
    artifact metadata it writes into the executor's ExecutorInput (leaving its ExecutorOutput at
    outputFile, which TFX's entrypoint also reads). Open-source KFP runs no lifecycle hook, so
    run_driver=False never does;
  - reads back each ExecutorOutput.

What it does not do, and only a real cluster shows: pulling and running the image, Argo
workflows, KFP's ML Metadata and caching, retries, remote artifact stores, resource requests.
Tasks that are not containers (resolver or importer executors) are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
OUTPUT_FILE = "kfp_outputs/output_metadata.json"  # under each task's own directory, as in the launcher's pod


class ConformanceError(RuntimeError):
    """The spec asks for something KFP would not do this way, or a task failed."""


@dataclasses.dataclass
class TaskResult:
    name: str
    executor_input: dict
    executor_output: dict
    seconds: float
    driver_output: dict | None = None

    def output_artifact(self, key: str) -> dict:
        """The output artifact `key` as the next task receives it (uri and metadata after the run)."""
        (artifact,) = self.executor_output["artifacts"][key]["artifacts"]
        return artifact


def load_spec(path: str | os.PathLike) -> dict:
    with open(path) as f:
        document = yaml.safe_load(f)  # JSON is YAML too
    return document.get("pipelineSpec", document)


def task_order(spec: Mapping) -> list[str]:
    """The root DAG's tasks, each after every task in its dependentTasks (ties by name)."""
    tasks = spec["root"]["dag"]["tasks"]
    pending = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    for name, deps in pending.items():
        unknown = deps - set(tasks)
        if unknown:
            raise ConformanceError(f"task {name} depends on unknown task(s) {sorted(unknown)}")
    order: list[str] = []
    while pending:
        ready = sorted(name for name, deps in pending.items() if not deps - set(order))
        if not ready:
            raise ConformanceError(f"dependency cycle among {sorted(pending)}")
        order.append(ready[0])
        del pending[ready[0]]
    return order


def _schema_2_1(spec: Mapping) -> bool:
    return spec.get("schemaVersion", "2.0.0") >= "2.1.0"


def _legacy_value(constant_value: Mapping):
    """schema 2.0 `constantValue` ({"intValue": "3"} ...), as the launcher passes it in `parameters`."""
    ((kind, value),) = constant_value.items()
    return {kind: str(int(value)) if kind == "intValue" else value}


def _as_legacy(value) -> dict:
    """A parameterValues value in schema 2.0's `parameters` form."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"intValue": str(int(value))} if float(value).is_integer() else {"doubleValue": value}
    return {"stringValue": value if isinstance(value, str) else json.dumps(value)}


def parameter_inputs(spec: Mapping, task_name: str, pipeline_parameters: Mapping) -> dict:
    """The task's parameters: {"parameterValues": {...}} (schema 2.1) or {"parameters": {...}} (2.0)."""
    task = spec["root"]["dag"]["tasks"][task_name]
    root_inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    new_form = _schema_2_1(spec)
    values: dict = {}
    for name, source in task.get("inputs", {}).get("parameters", {}).items():
        if "runtimeValue" in source:
            runtime_value = source["runtimeValue"]
            if new_form:
                if "constant" not in runtime_value:
                    raise ConformanceError(f"{task_name}.{name}: schema 2.1 reads only runtimeValue.constant, "
                                           f"got {sorted(runtime_value)}")
                values[name] = runtime_value["constant"]
            else:
                if "constantValue" not in runtime_value:
                    raise ConformanceError(f"{task_name}.{name}: schema 2.0 expects runtimeValue.constantValue")
                values[name] = _legacy_value(runtime_value["constantValue"])
        elif "componentInputParameter" in source:
            parameter = source["componentInputParameter"]
            if parameter in pipeline_parameters:
                value = pipeline_parameters[parameter]
            elif "defaultValue" in root_inputs.get(parameter, {}):
                value = root_inputs[parameter]["defaultValue"]
            else:
                raise ConformanceError(f"{task_name}.{name}: pipeline parameter {parameter} has no value and "
                                       "no default")
            values[name] = value if new_form else _as_legacy(value)
        else:
            raise ConformanceError(f"{task_name}.{name}: parameter source {sorted(source)} is not supported here")
    return {"parameterValues": values} if new_form else {"parameters": values}


def _schema_title(artifact_type: Mapping) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    return yaml.safe_load(artifact_type["instanceSchema"])["title"]


def _component(spec: Mapping, task_name: str) -> dict:
    return spec["components"][spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]]


def _container(spec: Mapping, task_name: str) -> dict:
    label = _component(spec, task_name)["executorLabel"]
    executor = spec["deploymentSpec"]["executors"][label]
    if "container" not in executor:
        raise ConformanceError(f"task {task_name}: executor {label} is {sorted(executor)}, not a container")
    return executor["container"]


def _substitute(args: Sequence[str], executor_input: Mapping) -> list[str]:
    resolved = []
    for arg in args:
        if arg == "{{$}}":
            resolved.append(json.dumps(executor_input))
        elif re.search(r"\{\{\$", arg):
            raise ConformanceError(f"placeholder not supported by this runner: {arg[:120]}")
        else:
            resolved.append(arg)
    return resolved


class Run:
    """One run of a compiled spec: state shared by its tasks (upstream outputs, artifact ids)."""

    def __init__(self, spec: Mapping, pipeline_root: str | os.PathLike, work_dir: str | os.PathLike, *,
                 run_driver: bool, parameters: Mapping | None = None, run_id: str = "run-1",
                 python: str = sys.executable, env: Mapping | None = None):
        self.spec = spec
        self.pipeline_root = str(pipeline_root)
        self.work_dir = pathlib.Path(work_dir)
        self.run_driver = run_driver
        self.parameters = dict(parameters or {})
        self.run_id = run_id
        self.python = python
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "TF_USE_LEGACY_KERAS": "1", **(env or {})}
        self.results: dict[str, TaskResult] = {}
        self._artifact_names: dict[tuple[str, str], str] = {}

    def executor_input(self, task_name: str) -> dict:
        task = self.spec["root"]["dag"]["tasks"][task_name]
        component = _component(self.spec, task_name)
        input_artifacts = {}
        for name, source in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in source:
                raise ConformanceError(f"{task_name}.{name}: artifact source {sorted(source)} is not supported")
            producer = source["taskOutputArtifact"]["producerTask"]
            key = source["taskOutputArtifact"]["outputArtifactKey"]
            if producer not in self.results:
                raise ConformanceError(f"{task_name}.{name}: producer {producer} has not run")
            produced = self.results[producer].output_artifact(key)
            produced_type = _component(self.spec, producer)["outputDefinitions"]["artifacts"][key]["artifactType"]
            input_artifacts[name] = {"artifacts": [{
                "name": self._artifact_names[(producer, key)],
                "type": {"schemaTitle": _schema_title(produced_type)},
                "uri": produced["uri"],
                "metadata": produced.get("metadata", {}),
            }]}
        output_artifacts = {}
        for key, definition in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            uri = f"{self.pipeline_root}/{self.run_id}/{task_name}/{key}"
            os.makedirs(os.path.dirname(uri), exist_ok=True)
            output_artifacts[key] = {"artifacts": [{"type": definition["artifactType"], "uri": uri, "metadata": {}}]}
        return {
            "inputs": {**parameter_inputs(self.spec, task_name, self.parameters), "artifacts": input_artifacts},
            "outputs": {"artifacts": output_artifacts,
                        "outputFile": str(self.work_dir / task_name / OUTPUT_FILE)},
        }

    def _run_command(self, task_name: str, what: str, command: Sequence[str], args: Sequence[str],
                     executor_input: Mapping) -> dict:
        command = [self.python if part == "python" else part for part in command]
        argv = [*command, *_substitute(args, executor_input)]
        output_file = pathlib.Path(executor_input["outputs"]["outputFile"])
        log = self.work_dir / task_name / f"{what}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as f:
            code = subprocess.run(argv, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
            raise ConformanceError(f"task {task_name}: {what} exited with {code}; last lines of {log}:\n{tail}")
        if not output_file.is_file():
            raise ConformanceError(f"task {task_name}: {what} wrote no ExecutorOutput at {output_file}")
        return json.loads(output_file.read_text())

    def run_task(self, task_name: str) -> TaskResult:
        container = _container(self.spec, task_name)
        executor_input = self.executor_input(task_name)
        started = time.monotonic()
        driver_output = None
        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook and self.run_driver:
            driver_output = self._run_command(task_name, "driver", hook["command"], hook.get("args", []),
                                              executor_input)
            # The driver's parameters (span, input_fingerprint, version when the pattern has {VERSION},
            # the resolved input_config) and its output artifact metadata become the executor's input,
            # in the schema's form. Its file also stays at outputFile, where TFX's entrypoint looks for
            # a driver's output and merges its parameterValues itself.
            output_file = pathlib.Path(executor_input["outputs"]["outputFile"])
            output_file.with_name("driver_output.json").write_text(output_file.read_text())
            driven = driver_output.get("parameterValues", {})
            if _schema_2_1(self.spec):
                executor_input["inputs"]["parameterValues"].update(driven)
            else:  # schema 2.0 executors read only `parameters`, in the legacy typed form
                executor_input["inputs"]["parameters"].update({k: _as_legacy(v) for k, v in driven.items()})
            for key, artifacts in driver_output.get("artifacts", {}).items():
                (artifact,) = artifacts["artifacts"]
                executor_input["outputs"]["artifacts"][key]["artifacts"][0]["metadata"].update(
                    artifact.get("metadata", {}))
        executor_output = self._run_command(task_name, "executor", container["command"], container.get("args", []),
                                            executor_input)
        # The launcher keeps the provisioned uri when the executor reports none.
        for key, artifacts in executor_input["outputs"]["artifacts"].items():
            reported = executor_output.setdefault("artifacts", {}).setdefault(key, {"artifacts": [{}]})["artifacts"]
            reported[0].setdefault("uri", artifacts["artifacts"][0]["uri"])
            self._artifact_names[(task_name, key)] = str(len(self._artifact_names) + 1)
        result = TaskResult(task_name, executor_input, executor_output, time.monotonic() - started, driver_output)
        self.results[task_name] = result
        return result

    def run_all(self, tasks: Sequence[str] | None = None) -> dict[str, TaskResult]:
        for name in task_order(self.spec):
            if tasks is None or name in tasks:
                self.run_task(name)
        return self.results


def run_spec(spec_path, pipeline_root, work_dir, *, run_driver: bool, parameters=None,
             tasks: Sequence[str] | None = None) -> dict[str, TaskResult]:
    return Run(load_spec(spec_path), pipeline_root, work_dir, run_driver=run_driver,
               parameters=parameters).run_all(tasks)
