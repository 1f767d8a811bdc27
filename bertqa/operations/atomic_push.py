"""Pushing a model version whole or not at all.

Phones, `bertqa lineage` and the next run's baseline read `<serving_dir>/<version>/`; a
version that appears file by file (TFX's Pusher copies a directory file by file) can be
read half-written, and a push killed midway leaves it half-written for good. Here a
version is first copied into a hidden staging directory beside it
(`<serving_dir>/.partial-<version>-<random>/`), every file and the directory are synced to
disk, and one rename makes it appear with all its files at once: rename(2) of a directory
is atomic on a POSIX file system, so after a kill at any point a version is either absent
or complete. Staging directories left by a killed push are removed by the next push (the
runs lock guarantees that no other push is using them), and nothing that lists versions
looks at them: versions are named by digits only.

Object stores (gs://, s3://) have no atomic rename of a directory. There the files are
copied in place with `model_record.json` last, and readers (bertqa.operations.pushed_models) take
a version only once that file is there (TensorFlow's file system, imported only for them).
No TFX here.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable

PARTIAL_PREFIX = ".partial-"
# Written last on object stores: its presence marks the version complete (bertqa.operations.pushed_models).
LAST_FILE = "model_record.json"


class VersionExists(FileExistsError):
    """The version directory is already there (TFX's Pusher skips such a push, and so does this)."""


def is_local(path: str) -> bool:
    return "://" not in path


def _gfile():
    import tensorflow as tf  # only for object stores: a local push needs no TensorFlow

    return tf.io.gfile


def remove_partial_versions(serving_dir: str) -> list[str]:
    """Removes the staging directories of pushes that never finished; returns their names."""
    if not is_local(serving_dir):
        return []  # object stores get no staging directories
    if not os.path.isdir(serving_dir):
        return []
    removed = []
    for name in sorted(os.listdir(serving_dir)):
        if name.startswith(PARTIAL_PREFIX):
            shutil.rmtree(os.path.join(serving_dir, name))
            removed.append(name)
    return removed


def _copy_synced(source: str, destination: str) -> None:
    with open(source, "rb") as src, open(destination, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(source_dir: str) -> list[str]:
    """Relative paths of every file under source_dir, LAST_FILE last."""
    found = []
    walk = os.walk if is_local(source_dir) else _gfile().walk
    for root, _, names in walk(source_dir):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), source_dir))
    return sorted(found, key=lambda relative: (relative == LAST_FILE, relative))


def push_version(source_dir: str, serving_dir: str, version: str,
                 on_step: Callable[[str], None] | None = None) -> str:
    """Copies the files of source_dir to <serving_dir>/<version> so that they appear together.

    Returns the version's path; VersionExists if it is already there. `on_step` is called
    with a short description after each step (each file copied, the sync, the rename), for
    progress logs and for tests that stop a push at every step.
    """
    step = on_step or (lambda _: None)
    final = os.path.join(serving_dir, version)
    files = _files(source_dir)
    if not is_local(serving_dir) or not is_local(source_dir):
        gfile = _gfile()
        if gfile.exists(final):
            raise VersionExists(final)
        for relative in files:
            target = os.path.join(final, relative)
            gfile.makedirs(os.path.dirname(target))
            gfile.copy(os.path.join(source_dir, relative), target)
            step(f"copied {relative}")
        return final
    if os.path.exists(final):
        raise VersionExists(final)
    os.makedirs(serving_dir, exist_ok=True)
    remove_partial_versions(serving_dir)
    staging = os.path.join(serving_dir, f"{PARTIAL_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    step("staging directory created")
    for relative in files:
        target = os.path.join(staging, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _copy_synced(os.path.join(source_dir, relative), target)
        step(f"copied {relative}")
    for root, _, _ in os.walk(staging, topdown=False):
        _sync_dir(root)
    step("synced")
    os.rename(staging, final)  # the version appears here, whole
    _sync_dir(serving_dir)
    step("renamed")
    return final


def write_file_atomically(path: str, data: bytes) -> None:
    """Writes a file that readers see either as it was or complete (a temporary file, then a rename)."""
    if not is_local(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
        return
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
