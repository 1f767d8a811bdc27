"""Reading back what a run recorded in ML Metadata: the latest results and artifact lineage.

A store is either the SQLite file in a runs directory (`SqliteStore`, the default: one
machine, no server) or a MySQL-protocol server (`MySqlStore`: a team's shared store, MariaDB or
MySQL, as Kubeflow Pipelines keeps its own). Its password comes from the environment
(PASSWORD_ENV), never from a command line, a config file or a log line.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)

PASSWORD_ENV = "BERTQA_METADATA_PASSWORD"
SETUP_HINT = "scripts/mariadb_local.sh start runs a local MariaDB for it; docs/metadata-server.md"


class MetadataStoreError(Exception):
    """A store that cannot be opened or stopped answering: one line naming it and what to do."""


@dataclasses.dataclass(frozen=True)
class SqliteStore:
    """The embedded store: one SQLite file, read and written by one run at a time (the runs lock)."""

    path: str
    # Only runs holding this runs directory's lock write here, so an execution left unfinished is
    # a killed run's (mark_interrupted_executions).
    shared = False

    def describe(self) -> str:
        return self.path

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def connection_config(self, readonly: bool = True) -> metadata_store_pb2.ConnectionConfig:
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = self.path
        config.sqlite.connection_mode = (metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if readonly
                                         else metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
        return config


_MYSQL_URL = re.compile(r"^(?:mysql://)?(?P<user>[^@:/]+)(?P<password>:[^@]*)?@(?P<host>[^:/@]+)"
                        r"(?::(?P<port>\d+))?(?:/(?P<database>[A-Za-z0-9_$]+))?$")


@dataclasses.dataclass(frozen=True)
class MySqlStore:
    """ML Metadata on a MySQL-protocol server (MariaDB 10.11 from Debian is what the tests run).

    The database is created on first use when the user may create it. Several runs directories,
    machines and pipelines may share it; each run reads back only what it recorded.
    """

    host: str
    port: int = 3306
    database: str = "bertqa_metadata"
    user: str = "bertqa"
    shared = True

    @classmethod
    def from_url(cls, text: str) -> MySqlStore:
        """'[mysql://]USER@HOST[:PORT][/DATABASE]', as --metadata-mysql takes it."""
        match = _MYSQL_URL.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r}: give the server as USER@HOST[:PORT][/DATABASE], e.g. "
                             "bertqa@127.0.0.1:3306/bertqa_metadata")
        if match["password"] is not None:
            raise ValueError(f"a password on the command line would land in shell history and process lists: "
                             f"give USER@HOST[:PORT][/DATABASE] and put the password in {PASSWORD_ENV}")
        return cls(host=match["host"], port=int(match["port"] or 3306),
                   database=match["database"] or cls.database, user=match["user"])

    def describe(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    def exists(self) -> bool:
        return True

    def password(self) -> str:
        if PASSWORD_ENV not in os.environ:
            raise MetadataStoreError(
                f"ML Metadata on {self.describe()}: set {PASSWORD_ENV} to the password of {self.user} "
                "(it is read from the environment only)")
        return os.environ[PASSWORD_ENV]

    def check_reachable(self) -> None:
        """Connects once with PyMySQL and raises MetadataStoreError with the server's own reason.

        ML Metadata's C++ client reports a refused or denied connection as 'mysql_real_connect
        failed' with an empty errno and a MySQL 8 hint that does not apply; PyMySQL (already in
        the environment, through Beam) gives the reason in one line.
        """
        import pymysql

        try:
            pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password(),
                            connect_timeout=10).close()
        except pymysql.MySQLError as error:
            reason = error.args[1] if len(error.args) > 1 else str(error)
            raise MetadataStoreError(unreachable_message(self, str(reason))) from None

    def connection_config(self, readonly: bool = True) -> metadata_store_pb2.ConnectionConfig:
        del readonly  # a server's access is the user's grants
        config = metadata_store_pb2.ConnectionConfig()
        config.mysql.host = self.host
        config.mysql.port = self.port
        config.mysql.database = self.database
        config.mysql.user = self.user
        config.mysql.password = self.password()
        return config


def unreachable_message(location: MySqlStore, reason: str) -> str:
    return (f"cannot reach the ML Metadata server {location.describe()}: {reason}. Start it, or check "
            f"--metadata-mysql and {PASSWORD_ENV} ({SETUP_HINT})")


def open_store(location: SqliteStore | MySqlStore, readonly: bool = True) -> mlmd.MetadataStore:
    if isinstance(location, MySqlStore):
        location.check_reachable()
    return mlmd.MetadataStore(location.connection_config(readonly))


def sqlite_store(path: str) -> mlmd.MetadataStore:
    return open_store(SqliteStore(path))


_PROTO_PASSWORD = re.compile(r'password: "(?:[^"\\]|\\.)*"')


class _PasswordRedactingRecords:
    """A log record factory that writes '***' for a password wherever a record would show it.

    TFX's LocalDagRunner logs the whole connection config (password included) at INFO when a
    run starts; the factory catches that and any other record, from every logger, before any
    handler formats it.
    """

    def __init__(self, factory, password: str):
        self.factory, self.password = factory, password

    def __call__(self, *args, **kwargs):
        record = self.factory(*args, **kwargs)
        message = record.getMessage()
        if self.password in message or "password" in message:
            # The config arrives as protobuf text, where the password is escaped ('\'' for ').
            redacted = _PROTO_PASSWORD.sub('password: "***"', message.replace(self.password, "***"))
            if redacted != message:
                record.msg, record.args = redacted, ()
        return record


def keep_password_out_of_logs(location: SqliteStore | MySqlStore) -> None:
    """Installs _PasswordRedactingRecords for the store's password (once; nothing for SQLite)."""
    if not isinstance(location, MySqlStore):
        return
    password = location.password()
    factory = logging.getLogRecordFactory()
    if password and not (isinstance(factory, _PasswordRedactingRecords) and factory.password == password):
        logging.setLogRecordFactory(_PasswordRedactingRecords(factory, password))


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


# The ids of the pipeline runs started from a pipeline's run directory, one a line: with a server
# store, how a runs directory tells its own runs from other machines' (the local runner writes it).
RUNS_FILE = "pipeline_runs.txt"


def started_runs(run_dir: str) -> set[str]:
    """The pipeline run ids listed in RUN_DIR/RUNS_FILE (empty without the file)."""
    try:
        with open(os.path.join(run_dir, RUNS_FILE)) as runs:
            return {line.strip() for line in runs if line.strip()}
    except FileNotFoundError:
        return set()


def record_started_run(run_dir: str, run_id: str) -> None:
    with open(os.path.join(run_dir, RUNS_FILE), "a") as runs:
        runs.write(run_id + "\n")


def run_context_ids(store: mlmd.MetadataStore, run_ids: set[str]) -> set[int]:
    """The ids of the pipeline_run contexts named in `run_ids`."""
    return {c.id for c in store.get_contexts_by_type("pipeline_run") if c.name in run_ids}


def mark_interrupted_executions(location: SqliteStore | MySqlStore, run_ids: set[str] = frozenset()) -> list[int]:
    """Marks executions left NEW or RUNNING as CANCELED; returns their ids.

    Call it only while holding the runs directory's lock (bertqa.operations.run_lock): then no
    process of this runs directory is running an execution, so an unfinished one of its runs
    belongs to a run that was killed (TFX's LocalDagRunner leaves it RUNNING forever). Marking
    it says so in ML Metadata, and TFX's cache, which reuses only COMPLETE or CACHED
    executions, ignores it either way. In a SQLite file every execution is this directory's; on
    a shared server only those of the pipeline runs in `run_ids` (started from this runs
    directory) are, since another machine's run may be going on.
    """
    store = open_store(location, readonly=False)
    unfinished = [e for e in store.get_executions() if e.last_known_state in _UNFINISHED_STATES]
    if location.shared:
        ours = run_context_ids(store, run_ids)
        unfinished = [e for e in unfinished if any(c.id in ours for c in store.get_contexts_by_execution(e.id))]
    for execution in unfinished:
        execution.last_known_state = metadata_store_pb2.Execution.CANCELED
        execution.custom_properties[INTERRUPTED_PROPERTY].string_value = (
            "its process ended before it completed; marked by the next run")
    if unfinished:
        store.put_executions(unfinished)
    return [e.id for e in unfinished]


def add_metadata_server_arg(parser) -> None:
    """--metadata-mysql, for the local runner, `bertqa retrain`, `bertqa lineage` and `bertqa report`."""
    import argparse

    def server(text: str) -> MySqlStore:
        try:
            return MySqlStore.from_url(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parser.add_argument("--metadata-mysql", type=server, default=None, metavar="USER@HOST[:PORT][/DATABASE]",
                        help=f"keep ML Metadata on this MySQL or MariaDB server instead of the runs directory's "
                             f"SQLite file (port 3306, database bertqa_metadata unless given; the password from "
                             f"{PASSWORD_ENV}); see docs/metadata-server.md")


class RunScopedStore:
    """A store whose artifact queries by type answer with one pipeline run's artifacts only.

    On a shared server the newest artifact of a type may be another runs directory's; the
    artifacts TFX attributes to this run's pipeline_run context (cached ones included) are this
    run's. Every other call goes to the store itself.
    """

    def __init__(self, store: mlmd.MetadataStore, run_id: str):
        self._store = store
        self._ids = {a.id for c in run_context_ids(store, {run_id}) for a in store.get_artifacts_by_context(c)}

    def get_artifacts_by_type(self, type_name: str):
        return [a for a in self._store.get_artifacts_by_type(type_name) if a.id in self._ids]

    def __getattr__(self, name):
        return getattr(self._store, name)


def run_store(location: SqliteStore | MySqlStore, run_id: str | None):
    """The store to read one run's results from: the whole file for SQLite, the run's share of a server."""
    store = open_store(location)
    return RunScopedStore(store, run_id) if location.shared and run_id else store
