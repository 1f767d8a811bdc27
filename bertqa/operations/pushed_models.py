"""What the pipeline pushed: the model record in each serving version, and the baseline it gives.

Every pushed version (`<serving_dir>/<version>/`) carries `model_record.json` beside
`model.tflite`: which SavedModel it was exported from, that model's identity (spec,
vocabulary, windowing), the span it was trained on, its metrics, the baseline it beat and
the model it was warm-started from. The next run reads its baseline from here, not through
a TFX resolver: open-source Kubeflow Pipelines runs no resolver nodes, and the push
destination is where "what is on the phones" is defined anyway, on every orchestrator.

No TFX here; files are read with tf.io.gfile, so a serving directory may be on any
filesystem TensorFlow reads (gs://, s3://, hdfs://).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess

import tensorflow as tf

RECORD_FILE = "model_record.json"
# A version holds a model only when all of these are there (Pusher copies file by file).
REQUIRED_FILES = ("model.tflite", "vocab.txt", RECORD_FILE)
# Spec fields that change what a model computes from the same text. Training-only tunables
# (learning rate, epochs, batch sizes, dropout) are left out: a model retrained with another
# learning rate is still comparable with, and warm-startable from, its predecessor.
IDENTITY_SPEC_FIELDS = ("name", "random_encoder", "hub_handle", "do_lower_case", "seq_len", "query_len",
                        "doc_stride")

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PushedModel:
    version: str
    path: str  # the version directory
    record: dict

    @property
    def saved_model_dir(self) -> str:
        return self.record["saved_model_dir"]

    def training_summary(self) -> dict:
        """training_summary.json of the Trainer model this version was exported from (at the model's root)."""
        with tf.io.gfile.GFile(os.path.join(os.path.dirname(self.saved_model_dir.rstrip("/")),
                                            "training_summary.json")) as f:
            return json.load(f)

    @property
    def model_id(self) -> int | None:
        return self.record.get("model_id")

    @property
    def f1(self) -> float | None:
        return self.record.get("metrics", {}).get("f1")

    @property
    def span(self) -> int | None:
        return self.record.get("span")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(spec_fields: dict, vocab_path: str) -> dict:
    """What must be equal for two models to be scored on the same windows and share weights."""
    identity = {name: spec_fields.get(name) for name in IDENTITY_SPEC_FIELDS}
    identity["vocab_sha256"] = file_sha256(vocab_path)
    return identity


def comparability_problem(candidate: dict, baseline: dict) -> str | None:
    """Why a baseline cannot be compared with (or warm-start) a candidate, or None when it can."""
    differences = [f"{name} {baseline.get(name)!r} vs {candidate.get(name)!r}"
                   for name in sorted(set(candidate) | set(baseline)) if candidate.get(name) != baseline.get(name)]
    if not differences:
        return None
    return "a different model (baseline vs candidate: " + "; ".join(differences) + ")"


def _versions(serving_dir: str) -> list[str]:
    if not tf.io.gfile.isdir(serving_dir):
        return []
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(serving_dir)]
    # Pusher names versions by Unix time; anything else there is not ours.
    return sorted((name for name in names if name.isdigit()), key=int)


def read_version(serving_dir: str, version: str) -> PushedModel | None:
    """The pushed model of one version, or None when the version is incomplete."""
    path = os.path.join(serving_dir, version)
    missing = [name for name in REQUIRED_FILES if not tf.io.gfile.exists(os.path.join(path, name))]
    if missing:
        _LOG.warning("serving version %s is incomplete (no %s); not a baseline", path, ", ".join(missing))
        return None
    with tf.io.gfile.GFile(os.path.join(path, RECORD_FILE)) as f:
        return PushedModel(version=version, path=path, record=json.load(f))


def list_pushed(serving_dir: str) -> list[PushedModel]:
    """Every complete pushed version, oldest first."""
    return [m for m in (read_version(serving_dir, v) for v in _versions(serving_dir)) if m is not None]


def latest_pushed(serving_dir: str) -> PushedModel | None:
    """The newest complete version: the model that is on the phones, and the next run's baseline."""
    for version in reversed(_versions(serving_dir)):
        pushed = read_version(serving_dir, version)
        if pushed is not None:
            return pushed
    return None


def find_pushed(serving_dir: str, version_or_path: str) -> PushedModel | None:
    """A pushed version by its name, its directory, or the path of one of its .tflite files."""
    path = version_or_path.rstrip("/")
    if path.endswith(".tflite"):
        path = os.path.dirname(path)
    version = os.path.basename(path) or path
    return read_version(os.path.dirname(path) if os.path.dirname(path) else serving_dir, version)


def project_version() -> dict:
    """This package's version and, from a git checkout, its commit (or $BERTQA_GIT_COMMIT, set in images)."""
    from importlib import metadata

    try:
        package = metadata.version("bertqa-tfx")
    except metadata.PackageNotFoundError:
        package = None
    commit = os.environ.get("BERTQA_GIT_COMMIT")
    if not commit:
        try:
            here = os.path.dirname(os.path.abspath(__file__))
            commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip() or None
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            if commit and dirty:
                commit += "+uncommitted"
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"package": package, "git_commit": commit}
