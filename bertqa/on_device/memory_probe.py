"""How much memory a .tflite takes in LiteRT: load it, run every signature once, report the process's RSS.

    python -m bertqa.on_device.memory_probe model.tflite [--threads N]

Prints one JSON line: `baseline_mb` (the probe process before the file is loaded: Python,
NumPy and LiteRT), `peak_mb` (its peak resident memory after every signature ran once, the
file's pages, the tensors' arena and XNNPACK's packed weights included), and `model_mb`, the
difference: what an app's process grows by when it loads and uses the file. A process of its
own because the pipeline's process holds TensorFlow, TFX and Beam, whose memory would drown
the file's. Imports only NumPy and LiteRT for the same reason.
"""

from __future__ import annotations

import argparse
import json
import sys


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/self/status has no {field}")


def probe(path: str, num_threads: int = 1) -> dict[str, float]:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    baseline = _rss_mb("VmRSS")
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        inputs = {name: np.zeros(details["shape"], np.int32) for name, details in runner.get_input_details().items()}
        runner(**inputs)
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a probe started from a
    # large process (the pipeline's) would report that process's peak.
    peak = _rss_mb("VmHWM")
    return {"baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1), "model_mb": round(peak - baseline, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.model, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
