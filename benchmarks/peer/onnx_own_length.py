"""ONNX Runtime int8 on each question at its own length: the peer of benchmarks/question_latency.py.

    benchmarks/.peer-venv/bin/python benchmarks/peer/onnx_own_length.py --weights DIR --questions Q.npz \
        --out OUT.json [--threads 1,2]

DIR holds the project's trained weights in the Hugging Face BERT layout (written by
benchmarks/peer_benchmark.write_hf_weights). The model is exported from transformers'
BertForQuestionAnswering with a dynamic sequence axis, fused with onnxruntime.transformers'
BERT optimizer and quantized with `quantize_dynamic` (int8 weights, activations at run time):
the way a practitioner would run these weights in ONNX Runtime on a CPU. Q.npz holds every
window's tokens unpadded (ids, mask, type_ids concatenated; `window_lengths`; `window_question`,
the question each window belongs to). Each question's windows run one after another at their
own lengths, timed per question, after warming up on a few of them; the logits of every
window come back (for the project's own SQuAD scoring) in OUT's `_logits.npz`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_peer import INPUTS, load_model, onnx_session, optimize_and_quantize  # noqa: E402


def export_dynamic(model, path: str) -> None:
    import torch

    example = tuple(torch.ones((1, 64), dtype=torch.int64) for _ in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes.update({name: {0: "batch", 1: "sequence"} for name in ("start_logits", "end_logits")})
    # The TorchScript exporter (dynamo=False): the graph onnxruntime.transformers' fusions are written for.
    torch.onnx.export(model, example, path, input_names=list(INPUTS), output_names=["start_logits", "end_logits"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--warmup", type=int, default=20, help="untimed questions before timing")
    args = parser.parse_args(argv)
    import onnxruntime

    data = np.load(args.questions)
    lengths, owners = data["window_lengths"], data["window_question"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    windows = [{name: data[key][offsets[i]:offsets[i + 1]].astype(np.int64)[np.newaxis]
                for name, key in zip(INPUTS, ("ids", "mask", "type_ids"), strict=True)} for i in range(len(lengths))]
    questions: dict[int, list[int]] = {}
    for i, owner in enumerate(owners):
        questions.setdefault(int(owner), []).append(i)
    order = sorted(questions)

    model, config = load_model(args.weights)
    directory = os.path.dirname(os.path.abspath(args.out))
    fp32_path = os.path.join(directory, "model_fp32_dynamic.onnx")
    export_dynamic(model, fp32_path)
    _, int8_path, _ = optimize_and_quantize(fp32_path, config, directory)  # the per-tensor int8 file

    seconds = {}
    for threads in (int(t) for t in args.threads.split(",")):
        session = onnx_session(int8_path, threads)
        for question in order[:args.warmup]:
            for i in questions[question]:
                session.run(None, windows[i])
        timings = []
        for question in order:
            started = time.perf_counter()
            for i in questions[question]:
                session.run(None, windows[i])
            timings.append(time.perf_counter() - started)
        seconds[threads] = timings
        print(f"peer: onnxruntime int8 at each question's length, {threads} thread(s): median "
              f"{1000 * float(np.median(timings)):.1f} ms", file=sys.stderr)
    session = onnx_session(int8_path, 1)
    starts, ends = [], []
    for window in windows:
        start, end = session.run(None, window)
        starts.append(start[0])
        ends.append(end[0])
    logits_path = os.path.splitext(args.out)[0] + "_logits.npz"
    np.savez(logits_path, start=np.concatenate(starts), end=np.concatenate(ends))
    with open(args.out, "w") as f:
        json.dump({"seconds": {str(t): s for t, s in seconds.items()}, "questions": order, "logits": logits_path,
                   "size_mb": os.path.getsize(int8_path) / 1e6, "onnxruntime": onnxruntime.__version__}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
