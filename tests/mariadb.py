"""A real MariaDB server for the tests, started and stopped with the project's own script
(scripts/mariadb_local.sh: Debian's mariadb-server, installed when missing), on loopback, in a
data directory of the test's own, on a free port."""

from __future__ import annotations

import os
import pathlib
import secrets
import socket
import subprocess

from bertqa.operations import metadata_store

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "mariadb_local.sh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalMariaDb:
    """One private server: start(), stop(), and the store a run gives --metadata-mysql."""

    def __init__(self, directory: pathlib.Path, database: str = "bertqa_metadata"):
        self.directory, self.port, self.database = directory, _free_port(), database
        # Quotes and a backslash: the script and the runs must pass it through untouched. Logs and
        # files may hold it escaped (as protobuf text does), so the tests look for its random core.
        self.secret_core = secrets.token_hex(8)
        self.password = f"pw'{self.secret_core}\\x"
        self.store = metadata_store.MySqlStore(host="127.0.0.1", port=self.port, database=database, user="bertqa")

    @property
    def url(self) -> str:
        return f"bertqa@127.0.0.1:{self.port}/{self.database}"

    def _script(self, command: str) -> str:
        env = {**os.environ, "BERTQA_MARIADB_DIR": str(self.directory), "BERTQA_MARIADB_PORT": str(self.port),
               "BERTQA_METADATA_DATABASE": self.database, "BERTQA_METADATA_PASSWORD": self.password}
        done = subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"mariadb_local.sh {command}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self) -> str:
        return self._script("start")

    def stop(self) -> str:
        return self._script("stop")

    def environment(self) -> dict:
        """What a run needs in its environment: the password, never on its command line."""
        return {metadata_store.PASSWORD_ENV: self.password}
