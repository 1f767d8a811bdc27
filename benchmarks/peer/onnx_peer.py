"""The peer runtimes of `make bench`, run in benchmarks/.peer-venv (never in the project's .venv).

    benchmarks/.peer-venv/bin/python benchmarks/peer/onnx_peer.py --weights DIR --windows W.npz --out OUT.json

DIR holds the project's trained weights in the Hugging Face BERT layout (config.json with
model.safetensors, written by benchmarks/peer_benchmark.py), so the peers run the very network
the project trained: transformers' BertForQuestionAnswering loads them (strictly: every tensor
present and used), torch.onnx exports it at [1, seq_len], and ONNX Runtime runs

  onnxruntime fp32  the export after onnxruntime.transformers' BERT fusions (attention,
                    LayerNorm, GELU), the way ONNX Runtime's docs tune BERT for CPUs;
  onnxruntime int8  that model through `quantize_dynamic` (int8 weights, activations quantized
                    at run time): the peer figure the project's `model.tflite` is held to;
                    and the same with `per_channel=True` (one weight scale per output channel);
  pytorch fp32      the eager model, for reference.

For each: the median latency of one window (batch 1, seq_len tokens) at 1 and 2 threads, after
warm-up; and the start/end logits of every window of W.npz, from which the project computes
F1 with its own post-processing (so every system is scored by the same code).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--windows", required=True, help=".npz with ids, mask, type_ids [n, seq_len] int32")
    parser.add_argument("--out", required=True, help="JSON with the figures; logits go beside it as .npz")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    return parser.parse_args(argv)


def load_model(weights_dir: str):
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForQuestionAnswering

    config = BertConfig.from_json_file(os.path.join(weights_dir, "config.json"))
    config._attn_implementation = "eager"  # the attention pattern onnxruntime.transformers fuses
    model = BertForQuestionAnswering(config)
    state = load_file(os.path.join(weights_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids is a buffer, not a weight; anything else missing would leave it random.
    missing = [name for name in missing if not name.endswith("position_ids")]
    if missing or unexpected:
        sys.exit(f"peer: {weights_dir}: missing {missing}, unexpected {unexpected}")
    model.eval()
    torch.set_grad_enabled(False)
    return model, config


def export_onnx(model, seq_len: int, path: str) -> None:
    import torch

    example = tuple(torch.ones((1, seq_len), dtype=torch.int64) for _ in INPUTS)
    # The TorchScript exporter (dynamo=False): the graph onnxruntime.transformers' fusions are written for.
    torch.onnx.export(model, example, path, input_names=list(INPUTS), output_names=["start_logits", "end_logits"],
                      opset_version=17, dynamo=False)


def optimize_and_quantize(fp32_path: str, config, directory: str) -> tuple[str, str, str]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(fp32_path, model_type="bert", num_heads=config.num_attention_heads,
                                     hidden_size=config.hidden_size)
    fused_path = os.path.join(directory, "model_fp32_fused.onnx")
    fused.save_model_to_file(fused_path)
    int8_path = os.path.join(directory, "model_int8.onnx")
    # The fused ops come from ONNX Runtime's contrib domain, which the quantizer's shape
    # inference cannot type; their tensors are float.
    quantize_dynamic(fused_path, int8_path, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    # One weight scale per output channel: what the project's dynamic-range export does too.
    per_channel_path = os.path.join(directory, "model_int8_per_channel.onnx")
    quantize_dynamic(fused_path, per_channel_path, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return fused_path, int8_path, per_channel_path


def median_ms(run, feed, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def onnx_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime
    import torch
    import transformers

    windows = np.load(args.windows)
    feeds = {"input_ids": windows["ids"].astype(np.int64), "attention_mask": windows["mask"].astype(np.int64),
             "token_type_ids": windows["type_ids"].astype(np.int64)}
    count, seq_len = feeds["input_ids"].shape
    threads = [int(t) for t in args.threads.split(",")]
    model, config = load_model(args.weights)
    directory = os.path.dirname(os.path.abspath(args.out))
    fp32_raw = os.path.join(directory, "model_fp32.onnx")
    export_onnx(model, seq_len, fp32_raw)
    fp32_path, int8_path, per_channel_path = optimize_and_quantize(fp32_raw, config, directory)
    one = {name: values[:1] for name, values in feeds.items()}

    systems = {}
    logits = {}
    for name, path in (("onnxruntime fp32", fp32_path), ("onnxruntime int8", int8_path),
                       ("onnxruntime int8 per-channel", per_channel_path)):
        latency = {}
        for t in threads:
            session = onnx_session(path, t)
            latency[t] = median_ms(lambda feed, s=session: s.run(None, feed), one, args.runs, args.warmup)
        session = onnx_session(path, max(threads))
        outputs = [session.run(None, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(count)]
        logits[name] = (np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]))
        systems[name] = {"latency_ms": latency, "size_mb": os.path.getsize(path) / 1e6}
        print(f"peer: {name}: " + ", ".join(f"{t} thread(s) {ms:.1f} ms" for t, ms in latency.items()),
              file=sys.stderr)

    latency = {}
    torch_one = {k: torch.from_numpy(v) for k, v in one.items()}
    for t in threads:
        torch.set_num_threads(t)
        latency[t] = median_ms(lambda feed: model(**feed), torch_one, args.runs, args.warmup)
    torch.set_num_threads(max(threads))
    starts, ends = [], []
    for i in range(count):
        out = model(**{k: torch.from_numpy(v[i:i + 1]) for k, v in feeds.items()})
        starts.append(out.start_logits.numpy())
        ends.append(out.end_logits.numpy())
    logits["pytorch fp32"] = (np.concatenate(starts), np.concatenate(ends))
    systems["pytorch fp32"] = {"latency_ms": latency, "size_mb": None}
    print("peer: pytorch fp32: " + ", ".join(f"{t} thread(s) {ms:.1f} ms" for t, ms in latency.items()),
          file=sys.stderr)

    logits_path = os.path.splitext(args.out)[0] + "_logits.npz"
    np.savez(logits_path, **{f"{name}|{part}": values for name, pair in logits.items()
                             for part, values in zip(("start", "end"), pair, strict=True)})
    versions = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__}
    with open(args.out, "w") as f:
        json.dump({"systems": systems, "logits": logits_path, "versions": versions, "runs": args.runs,
                   "warmup": args.warmup, "seq_len": seq_len}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
