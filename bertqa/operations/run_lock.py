"""One pipeline at a time per runs directory: the lock that `make run`, `bertqa run` and
`bertqa retrain` take before anything heavy.

Two runs on one runs directory would share the ML Metadata store (SQLite allows one
writer; TFX's drivers read and write it between steps), the serving directory (two
pushes, two baselines) and the Trainer's resume checkpoints. So the second one exits
at once with a message naming the holder, instead of waiting on a store it may corrupt.

flock, not a pid file: the kernel releases it when the holder dies (SIGKILL, OOM, power
loss of the process), so a killed run never leaves a stale lock behind. No TFX here.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import socket
import sys

LOCK_FILE = "run.lock"


class RunsLocked(RuntimeError):
    """Another pipeline run holds the lock of this runs directory."""


class RunsDirError(OSError):
    """The runs directory cannot be written (missing permission, read-only, full, not a directory)."""


def lock_path(runs_dir: str, pipeline_name: str) -> str:
    """<runs dir>/<pipeline>/run.lock: beside the pipeline's ML Metadata store and serving directory."""
    return os.path.join(os.path.abspath(runs_dir), pipeline_name, LOCK_FILE)


def writable_dir_problem(path: str, error: OSError) -> str:
    """One sentence for a runs directory that cannot be written: which path, why, what to do."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno == errno.ENOSPC:
        advice = "free space there or choose another runs directory with --runs-dir"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "choose a writable runs directory with --runs-dir, or fix its permissions"
    else:
        advice = "choose another runs directory with --runs-dir"
    where = getattr(error, "filename", None) or path
    return f"cannot write to the runs directory {path} ({reason}: {where}); {advice}"


@contextlib.contextmanager
def runs_lock(path: str):
    """An exclusive, non-blocking lock on `path`; RunsLocked when another process holds it.

    The file keeps the holder's pid, host, start time and command line, for the message
    the next caller gets. A runs directory that cannot be written raises RunsDirError.
    """
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunsDirError(error.errno, writable_dir_problem(directory, error)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "an unknown process"
            raise RunsLocked(f"{path} is held by {holder}: another pipeline run is using this runs directory. "
                             "Wait for it to finish, or use another --runs-dir (this one did nothing).") from None
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started} "
                          f"({' '.join(sys.argv)})\n".encode(), 0)
        except OSError as error:  # a full disk refuses even these few bytes
            raise RunsDirError(error.errno, writable_dir_problem(directory, error)) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
