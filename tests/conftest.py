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
def learnable_data_dir(tmp_path_factory, fixtures_dir) -> pathlib.Path:
    """The tiny fixtures, with code-word questions added to tiny_train.json (tests/synthetic_spans.py).

    tiny_train.json's 15 SQuAD questions teach the tiny model nothing it could answer about another
    context; with the code-word questions beside them it learns, within 40 steps, to answer "What is
    the code word?" about any context, so that a run can check that its model answers right.
    """
    from synthetic_spans import write_learnable_tiny_data

    return write_learnable_tiny_data(fixtures_dir, tmp_path_factory.mktemp("learnable_data"))


@pytest.fixture(scope="session")
def vocab_path() -> str:
    from bertqa.model import model_cache

    return str(model_cache.ensure_default_model() / "vocab.txt")
