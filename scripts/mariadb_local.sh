#!/usr/bin/env bash
# A MariaDB server for ML Metadata on this machine (docs/metadata-server.md), from Debian's
# mariadb-server package (10.11 on Debian 12), installed when missing. It runs as a private
# instance: its own data directory, a socket inside it, TCP on 127.0.0.1 only, no system service.
#
#   BERTQA_METADATA_PASSWORD=... scripts/mariadb_local.sh start   # install, initialise, start, add the user
#   scripts/mariadb_local.sh stop | status | install
#
# Settings (environment):
#   BERTQA_MARIADB_DIR          data directory, socket, pid file and server log (default: .mariadb)
#   BERTQA_MARIADB_PORT         TCP port on 127.0.0.1 (default 3306)
#   BERTQA_METADATA_USER        the user the runs connect as (default bertqa)
#   BERTQA_METADATA_DATABASE    the database it may create and use (default bertqa_metadata)
#   BERTQA_METADATA_PASSWORD    that user's password (start only); read from the environment and
#                               handed to the server on stdin, never on a command line
# Then: python local_runner.py --metadata-mysql bertqa@127.0.0.1:3306/bertqa_metadata
set -euo pipefail
cd "$(dirname "$0")/.."

dir="$(realpath -m "${BERTQA_MARIADB_DIR:-.mariadb}")"
port="${BERTQA_MARIADB_PORT:-3306}"
user="${BERTQA_METADATA_USER:-bertqa}"
database="${BERTQA_METADATA_DATABASE:-bertqa_metadata}"
socket="$dir/mysqld.sock"
pidfile="$dir/mysqld.pid"
log="$dir/server.log"
as_root=()
if [ "$(id -u)" = 0 ]; then as_root=(--user=root); fi  # mariadbd refuses root without it

install() {
  if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing MariaDB (Debian's mariadb-server; the metadata-server tests run against it)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server) >/dev/null
  else
    echo "setup: ML Metadata on a server needs MariaDB; install it with: sudo apt-get install -y mariadb-server" >&2
    exit 1
  fi
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

sql_string() {  # a SQL string literal: backslashes and single quotes escaped
  local text="${1//\\/\\\\}"
  printf "'%s'" "${text//\'/\'\'}"
}

start() {
  install
  export PATH="$PATH:/usr/sbin"
  if [ -z "${BERTQA_METADATA_PASSWORD+set}" ]; then
    echo "error: set BERTQA_METADATA_PASSWORD to the password the $user user gets (it stays out of command lines)" >&2
    exit 2
  fi
  mkdir -p "$dir"
  if [ ! -d "$dir/data/mysql" ]; then
    # root may log in through the socket only, as the OS user running this script.
    mariadb-install-db "${as_root[@]}" --datadir="$dir/data" --auth-root-authentication-method=socket \
      --auth-root-socket-user="$(id -un)" --skip-test-db >"$dir/install.log" 2>&1 \
      || { echo "error: mariadb-install-db failed; see $dir/install.log" >&2; exit 1; }
  fi
  if ! running; then
    # setsid: the server outlives this script and the shell (and test process group) that started it.
    setsid mariadbd --no-defaults "${as_root[@]}" --datadir="$dir/data" --socket="$socket" --port="$port" \
      --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$pidfile" --log-error="$log" \
      --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    for _ in $(seq 1 120); do
      if mariadb-admin --socket="$socket" -uroot ping >/dev/null 2>&1; then break; fi
      sleep 0.25
    done
    mariadb-admin --socket="$socket" -uroot ping >/dev/null 2>&1 \
      || { echo "error: MariaDB did not start on 127.0.0.1:$port; see $log" >&2; exit 1; }
  fi
  local password
  password="$(sql_string "$BERTQA_METADATA_PASSWORD")"
  mariadb --socket="$socket" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS \`$database\`;
CREATE USER IF NOT EXISTS '$user'@'127.0.0.1' IDENTIFIED BY $password;
ALTER USER '$user'@'127.0.0.1' IDENTIFIED BY $password;
GRANT ALL PRIVILEGES ON \`$database\`.* TO '$user'@'127.0.0.1';
SQL
  echo "MariaDB on 127.0.0.1:$port (data in $dir): --metadata-mysql $user@127.0.0.1:$port/$database"
}

stop() {
  export PATH="$PATH:/usr/sbin"
  if ! running; then echo "MariaDB in $dir is not running"; return 0; fi
  local pid
  pid="$(cat "$pidfile")"
  mariadb-admin --socket="$socket" -uroot shutdown 2>/dev/null || kill "$pid"
  for _ in $(seq 1 120); do
    if ! kill -0 "$pid" 2>/dev/null; then echo "MariaDB in $dir stopped"; return 0; fi
    sleep 0.25
  done
  echo "error: MariaDB (pid $pid) did not stop; see $log" >&2
  exit 1
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "MariaDB in $dir is running (pid $(cat "$pidfile"), 127.0.0.1:$port)";
          else echo "MariaDB in $dir is not running"; exit 3; fi ;;
  *) echo "usage: scripts/mariadb_local.sh start|stop|status|install" >&2; exit 2 ;;
esac
