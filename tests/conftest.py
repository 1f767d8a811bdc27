"""Test setup: Keras 2 before TensorFlow loads, and paths to the bundled fixtures."""

import os
import pathlib

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on AVX2-only CPUs too (Makefile)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"

# The slowest modules, slowest first (fresh-clone make test on the 2-core machine at 2d2daa0,
# --durations: each runs one or more whole pipelines in its module fixtures, 1.5-4 minutes). make
# test runs two xdist workers with --dist loadscope --no-loadscope-reorder: a worker takes the next
# whole module in collection order when it is free. Longest first leaves the many short modules
# to even out the two workers' ends; in the order of collection (or xdist's own, most tests first)
# the last minutes were one pipeline module on one worker while the other had nothing left.
SLOWEST_MODULES = (
    "test_metadata_server_e2e.py", "test_retrain_e2e.py", "test_kfp_conformance.py", "test_distributed_training.py",
    "test_faults_e2e.py", "test_tflite_exporter_pipeline.py", "test_pipeline_e2e.py", "test_tuner.py",
    "test_hostile_models.py",
    "test_model_maker.py", "test_tflite_exporter_component.py", "test_tflite_signatures.py", "test_serve.py",
    "test_portable_runner.py", "test_cli.py",
)


def pytest_collection_modifyitems(config, items):
    """Slowest modules first, each module's tests in their own order (the sort is stable)."""
    rank = {name: position for position, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
