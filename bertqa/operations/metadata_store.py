"""Reading back what a run recorded in ML Metadata: the latest results and artifact lineage."""

from __future__ import annotations

import collections

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)


def sqlite_store(path: str) -> mlmd.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def custom_properties(artifact: metadata_store_pb2.Artifact) -> dict:
    values = {}
    for name, value in artifact.custom_properties.items():
        kind = value.WhichOneof("value")
        values[name] = getattr(value, kind) if kind in ("int_value", "double_value", "string_value") else None
    return values


def latest_artifact(store: mlmd.MetadataStore, type_name: str) -> metadata_store_pb2.Artifact | None:
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def upstream_artifact_ids(store: mlmd.MetadataStore, artifact_id: int) -> set[int]:
    """Every artifact that `artifact_id` was derived from, through the executions that produced it."""
    seen_artifacts, seen_executions = set(), set()
    queue = collections.deque([artifact_id])
    while queue:
        current = queue.popleft()
        producers = {e.execution_id for e in store.get_events_by_artifact_ids([current]) if e.type in _OUTPUT_EVENTS}
        for execution_id in producers - seen_executions:
            seen_executions.add(execution_id)
            for event in store.get_events_by_execution_ids([execution_id]):
                if event.type in _INPUT_EVENTS and event.artifact_id not in seen_artifacts:
                    seen_artifacts.add(event.artifact_id)
                    queue.append(event.artifact_id)
    return seen_artifacts


def producer_component(store: mlmd.MetadataStore, artifact_id: int) -> str | None:
    """The pipeline node id (e.g. 'SquadExampleGen') of the execution that output the artifact."""
    events = [e for e in store.get_events_by_artifact_ids([artifact_id]) if e.type in _OUTPUT_EVENTS]
    if not events:
        return None
    (execution,) = store.get_executions_by_id([events[0].execution_id])
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node":
            return context.name.split(".")[-1]
    return None


def producer_execution(store: mlmd.MetadataStore, artifact_id: int) -> metadata_store_pb2.Execution | None:
    events = [e for e in store.get_events_by_artifact_ids([artifact_id]) if e.type in _OUTPUT_EVENTS]
    if not events:
        return None
    (execution,) = store.get_executions_by_id([events[0].execution_id])
    return execution


def execution_inputs(store: mlmd.MetadataStore, execution_id: int) -> dict[str, list[metadata_store_pb2.Artifact]]:
    """An execution's input artifacts by input key (e.g. 'examples', 'model')."""
    ids_by_key: dict[str, list[int]] = collections.defaultdict(list)
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type in _INPUT_EVENTS and event.path.steps:
            ids_by_key[event.path.steps[0].key].append(event.artifact_id)
    return {key: store.get_artifacts_by_id(ids) for key, ids in ids_by_key.items()}


def execution_properties(execution: metadata_store_pb2.Execution) -> dict:
    """The execution properties TFX recorded (as custom properties of the execution)."""
    return custom_properties(execution)


INTERRUPTED_PROPERTY = "bertqa_interrupted"
_UNFINISHED_STATES = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)


def mark_interrupted_executions(path: str) -> list[int]:
    """Marks every execution left NEW or RUNNING in the store at `path` as CANCELED; returns their ids.

    Call it only while holding the runs directory's lock (bertqa.operations.run_lock): then no process
    is running any execution of this store, so an unfinished one belongs to a run that was
    killed (TFX's LocalDagRunner leaves it RUNNING forever). Marking it says so in ML
    Metadata, and TFX's cache, which reuses only COMPLETE or CACHED executions, ignores it
    either way.
    """
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    store = mlmd.MetadataStore(config)
    unfinished = [e for e in store.get_executions() if e.last_known_state in _UNFINISHED_STATES]
    for execution in unfinished:
        execution.last_known_state = metadata_store_pb2.Execution.CANCELED
        execution.custom_properties[INTERRUPTED_PROPERTY].string_value = (
            "its process ended before it completed; marked by the next run")
    if unfinished:
        store.put_executions(unfinished)
    return [e.id for e in unfinished]
