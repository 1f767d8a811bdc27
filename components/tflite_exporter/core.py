"""The pure core of TFLiteExporter: convert, quantize, attach metadata, copy the vocab."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

from bertqa import tflite_export

DEFAULT_TFLITE_FILE = "model.tflite"


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    quantization: str = "dynamic"
    seq_len: int = 384
    query_len: int = 64
    do_lower_case: bool = True


def export(saved_model_dir: str, vocab_path: str, output_dir: str, plan: ExportPlan) -> tflite_export.ExportResult:
    config = tflite_export.TfliteExportConfig(seq_len=plan.seq_len, query_len=plan.query_len,
                                              do_lower_case=plan.do_lower_case)
    for problem in tflite_export.task_library_incompatibilities(config):
        logging.warning("TFLite export: %s", problem)
    os.makedirs(output_dir, exist_ok=True)
    result = tflite_export.export_tflite(
        saved_model_dir, vocab_path, os.path.join(output_dir, DEFAULT_TFLITE_FILE), config,
        tflite_export.QuantizationConfig.from_name(plan.quantization))
    # The Task Library reads the vocab from the metadata; the loose copy is for other clients.
    shutil.copyfile(vocab_path, os.path.join(output_dir, "vocab.txt"))
    return result
