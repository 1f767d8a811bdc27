"""Which dense layers of the dynamic-range model.tflite lose the most: each group kept float in turn, in LiteRT.

    .venv/bin/python benchmarks/dynamic_float_layers.py --saved-model DIR [--data data/sample/eval.json]

The dynamic-range file quantizes every large FULLY_CONNECTED layer's weights to int8 (one scale
per output channel, bertqa.on_device.per_channel) and LiteRT quantizes its activations per row at
run time. This script exports the float32 and dynamic-range files with the exporter's own code,
then writes copies of the dynamic-range file in which one group of dense layers (the query, key
and value projections, the attention output, the feed-forward intermediate or output, the first
or last encoder layer) keeps its float weights, and scores each on the eval split in LiteRT:
F1, EM, size and the share of questions answered as the float32 file answers (SQuAD-normalized),
a finer measure than an F1 drop on a few hundred questions. Figures in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _dense_layers(model) -> list[tuple[object, str, int | None]]:
    """(op, role, encoder layer) of every FULLY_CONNECTED op with int8 weights, named from its output tensor."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph, found, layer = model.subgraphs[0], [], 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.FULLY_CONNECTED:
            continue
        weights = graph.tensors[op.inputs[1]]
        if weights.type != schema.TensorType.INT8:
            continue  # the LayerNorm reductions and the span head stay float in every variant
        if op.builtinOptions is not None and op.builtinOptions.fusedActivationFunction != 0:
            # per_channel_dense_weights leaves these without the row rescale, so keep_float's
            # row-normalised float weights would be wrong for them: none in this project's encoders.
            raise SystemExit(f"bench: a FULLY_CONNECTED with a fused activation ({weights.name!r}); not supported")
        out_channels, in_channels = list(weights.shape)
        name = graph.tensors[op.outputs[0]].name.decode()
        if "attention/output_dense" in name:
            role = "attention output"
        elif out_channels > in_channels:
            role = "feed-forward intermediate"
        elif in_channels > out_channels:
            role = "feed-forward output"
        else:
            role = "query/key/value"
        found.append((op, role, layer))
        if role == "feed-forward output":
            layer += 1
    return found


def keep_float(dynamic_path: str, float_path: str, path: str, keep) -> int:
    """A copy of the dynamic-range file whose dense layers chosen by keep(role, layer) have float weights.

    The per-channel surgery divided each row of the weights by its largest magnitude (a float MUL after
    the op restores it), so the float weights written back are divided the same way."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    def read(p):
        with open(p, "rb") as f:
            return flatbuffer_utils.convert_bytearray_to_object(bytearray(f.read()))

    model, reference = read(dynamic_path), read(float_path)
    graph, float_graph = model.subgraphs[0], reference.subgraphs[0]
    float_ops = [op for op, _, _ in _dense_layers_of_float(reference)]
    kept = 0
    for (op, role, layer), float_op in zip(_dense_layers(model), float_ops, strict=True):
        if not keep(role, layer):
            continue
        float_weights = float_graph.tensors[float_op.inputs[1]]
        values = np.frombuffer(bytes(reference.buffers[float_weights.buffer].data), np.float32)
        values = values.reshape(list(float_weights.shape))
        row_max = np.abs(values).max(axis=1)
        row_max[row_max == 0] = 1.0
        buffer = schema.BufferT()
        buffer.data = np.frombuffer((values / row_max[:, None]).astype(np.float32).tobytes(), np.uint8)
        model.buffers.append(buffer)
        weights = graph.tensors[op.inputs[1]]
        model.buffers[weights.buffer].data = None  # the int8 codes, no longer read (not counted in the size)
        weights.buffer, weights.type, weights.quantization = len(model.buffers) - 1, schema.TensorType.FLOAT32, None
        kept += 1
    with open(path, "wb") as f:
        f.write(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return kept


def _dense_layers_of_float(model) -> list[tuple[object, str, int | None]]:
    """The float file's FULLY_CONNECTED ops paired with the dynamic file's int8 ones (same order, same shapes)."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph, found = model.subgraphs[0], []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.FULLY_CONNECTED:
            continue
        out_channels, in_channels = list(graph.tensors[op.inputs[1]].shape)
        if out_channels > 2 and in_channels > 2:  # not the LayerNorm reductions ([1, d]) or the span head ([2, d])
            found.append((op, "", None))
    return found


def groups(num_layers: int) -> dict:
    """The groups of dense layers kept float in turn: keep(role, layer) -> bool."""
    return {
        "query/key/value": lambda role, layer: role == "query/key/value",
        "attention output": lambda role, layer: role == "attention output",
        "feed-forward intermediate": lambda role, layer: role == "feed-forward intermediate",
        "feed-forward output": lambda role, layer: role == "feed-forward output",
        "first encoder layer": lambda role, layer: layer == 0,
        "last encoder layer": lambda role, layer: layer == num_layers - 1,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", required=True)
    parser.add_argument("--data", default=os.path.join(REPO, "data", "sample", "eval.json"))
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    from bertqa.data.tokenization import TokenizerConfig
    from bertqa.data.windowing import WindowConfig
    from bertqa.model import evaluation
    from bertqa.on_device import conversion, scoring, task_metadata
    from components.tflite_exporter import core

    vocab = task_metadata.saved_model_vocab_path(args.saved_model)
    config = conversion.TfliteExportConfig()
    examples, windows = evaluation.squad_file_windows(args.data, TokenizerConfig(vocab, config.do_lower_case),
                                                      WindowConfig(seq_len=config.seq_len, query_len=config.query_len))
    eval_config = evaluation.EvalConfig()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        paths = {v: os.path.join(scratch, f"{v}.tflite") for v in ("none", "dynamic")}
        for variant, path in paths.items():
            core.export_variant(args.saved_model, vocab, path, variant, config)
        float_answers = None

        def score(label: str, path: str, kept: int) -> None:
            nonlocal float_answers
            result = scoring.evaluate_tflite(path, examples, windows, eval_config, show_progress=False)
            float_answers = float_answers or result.predictions.answers
            rows.append({"file": label, "float dense layers": kept, "size_mb": os.path.getsize(path) / 1e6,
                         "exact_match": result.metrics["exact_match"], "f1": result.metrics["f1"],
                         "same answer as float32": scoring.answer_agreement(
                             examples, result.predictions.answers, float_answers)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

        score("float32 (none)", paths["none"], -1)
        score("dynamic (model.tflite)", paths["dynamic"], 0)
        from tensorflow.lite.tools import flatbuffer_utils

        with open(paths["dynamic"], "rb") as f:
            layers = _dense_layers(flatbuffer_utils.convert_bytearray_to_object(bytearray(f.read())))
        for label, keep in groups(1 + max(layer for _, _, layer in layers)).items():
            path = os.path.join(scratch, "keep.tflite")
            kept = keep_float(paths["dynamic"], paths["none"], path, keep)
            score(f"dynamic, {label} float", path, kept)
    print("| file | dense layers kept float | size (MB) | EM | F1 | same answer as float32 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        kept = "all" if row["float dense layers"] < 0 else str(row["float dense layers"])
        print(f"| {row['file']} | {kept} | {row['size_mb']:.1f} | {row['exact_match']:.2f} | {row['f1']:.2f} | "
              f"{100 * row['same answer as float32']:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
