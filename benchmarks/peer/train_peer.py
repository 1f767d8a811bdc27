"""The training peer of `make bench-train`, run in benchmarks/.peer-venv (never in the project's .venv).

    benchmarks/.peer-venv/bin/python benchmarks/peer/train_peer.py --checkpoint DIR --windows W.npz --out OUT.json

Hugging Face transformers' BertForQuestionAnswering on PyTorch (eager, CPU), initialised from the
same pretrained checkpoint as the project's default spec (DIR: config.json, model.safetensors),
fine-tuned on the same windows (W.npz, written by benchmarks/training_peer.py) with AdamW at
batch 32, the way transformers' run_qa.py trains:

  padded   every batch padded to seq_len (run_qa.py's default, pad_to_max_length);
  grouped  batches of windows of similar length, padded to their longest member
           (Trainer's group_by_length: mega-batches of 50 batches sorted by length): the best
           practice for CPUs;
  grouped-bf16  the same under torch.autocast("cpu", dtype=torch.bfloat16), which runs the linear
           layers in bfloat16 (transformers' Trainer with bf16=True on a CPU): the peer of the
           project's bfloat16 matmuls.

For each: windows per second over --steps steps after --warmup steps.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--windows", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", default="padded=6,grouped=20,grouped-bf16=20", help="measured steps per mode")
    return parser.parse_args(argv)


def batches(lengths: np.ndarray, batch_size: int, mode: str, seed: int = 42) -> list[np.ndarray]:
    """Index batches in training order: shuffled; `grouped` sorts each mega-batch of 50 batches by length."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    if mode == "grouped":
        mega = 50 * batch_size
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, len(order) // mega))])
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from transformers import BertForQuestionAnswering

    torch.manual_seed(42)
    torch.set_num_threads(args.threads)
    data = np.load(args.windows)
    ids, mask, types = data["ids"], data["mask"], data["type_ids"]
    starts, ends, lengths = data["start"], data["end"], mask.sum(axis=1)
    seq_len = ids.shape[1]
    results = {"torch": torch.__version__, "threads": args.threads, "batch_size": args.batch_size}
    for mode, measured in (part.split("=") for part in args.steps.split(",")):
        measured = int(measured)
        model = BertForQuestionAnswering.from_pretrained(args.checkpoint)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6)
        plan = batches(lengths, args.batch_size, mode.removesuffix("-bf16"))[:args.warmup + measured]
        if len(plan) < args.warmup + measured:
            raise SystemExit(f"train_peer: {len(plan)} batches in {args.windows}, need {args.warmup + measured}")
        started, windows = None, 0
        for step, index in enumerate(plan):
            if step == args.warmup:
                started = time.perf_counter()
            width = seq_len if mode == "padded" else int(lengths[index].max())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.endswith("bf16")):
                out = model(input_ids=torch.from_numpy(ids[index, :width].astype(np.int64)),
                            attention_mask=torch.from_numpy(mask[index, :width].astype(np.int64)),
                            token_type_ids=torch.from_numpy(types[index, :width].astype(np.int64)),
                            start_positions=torch.from_numpy(starts[index].astype(np.int64)),
                            end_positions=torch.from_numpy(ends[index].astype(np.int64)))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                windows += len(index)
        seconds = time.perf_counter() - started
        results[mode] = {"windows_per_second": windows / seconds, "steps": measured, "seconds": seconds,
                         "final_loss": float(out.loss)}
        print(f"train_peer {mode}: {windows / seconds:.2f} windows/s ({measured} steps, {seconds:.0f} s)", flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
