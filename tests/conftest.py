"""Test setup: Keras 2 before TensorFlow loads, and paths to the bundled fixtures."""

import os
import pathlib

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="session")
def vocab_path() -> str:
    from bertqa.model import model_cache

    return str(model_cache.ensure_default_model() / "vocab.txt")
