"""The figures every exported TFLite variant must carry, however the pipeline was run."""

import pytest

from components.tflite_exporter import core


def assert_every_variant_has_its_figures(props: dict) -> None:
    """Custom properties of TFLiteExporter's exported model (LocalDagRunner's ML Metadata, or KFP's metadata)."""
    assert sorted(props["variants"].split(",")) == sorted(core.VARIANTS)
    for variant in core.VARIANTS:
        assert props[f"{variant}_size_bytes"] > 100_000
        assert props[f"{variant}_latency_ms_1_thread"] > 0 and props[f"{variant}_latency_ms_2_threads"] > 0
        assert 0.0 <= props[f"{variant}_exact_match"] <= props[f"{variant}_f1"] <= 100.0
        assert props[f"{variant}_f1_drop"] == pytest.approx(props["saved_model_f1"] - props[f"{variant}_f1"])
        assert props[f"{variant}_task_library_ok"] == 1
        # Timed in the Task Library itself, and every tensor static so that XNNPACK runs the file.
        assert props[f"{variant}_task_library_ms_1_thread"] > 0 and props[f"{variant}_task_library_ms_2_threads"] > 0
        assert props[f"{variant}_dynamic_tensors"] == 0
        assert 0 < props[f"{variant}_xnnpack_delegated_ops"] <= props[f"{variant}_xnnpack_ops"]
