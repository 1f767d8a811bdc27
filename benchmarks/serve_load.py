"""Load on `bertqa serve`: 200 questions from 8 clients on loopback, p50/p99 latency and requests/s.

    .venv/bin/python benchmarks/serve_load.py [--runs-dir runs] [--version V] [--requests 200] [--clients 8]
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8765/    # a server already running

Without --url it starts `python -m bertqa_cli serve --port 0` over --runs-dir in a process of its
own (the clients here would otherwise share the server's GIL) with --interpreters, and stops it
at the end. The questions are --data's (the bundled eval split), each with its paragraph, taken in
order and cycled; every client holds one keep-alive connection and sends its next question when
the last is answered. A warm-up round (one question per interpreter the server may make, all at
once) loads the model first. Prints a table and one JSON object (--json writes it to a file too):
client-side latency p50/p99 in ms, requests/s over the timed requests, the server's own median
ms (answering; and waiting for an interpreter), the errors. Not a test: figures depend on the
machine and on what else runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def questions_from(path: str, limit: int = 500) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    found = []
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                found.append({"context": paragraph["context"], "question": qa["question"]})
                if len(found) == limit:
                    return found
    return found


class _Client:
    """One keep-alive connection, one question at a time."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self._connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)

    def ask(self, body: dict) -> tuple[int, dict, float]:
        started = time.perf_counter()
        self._connection.request("POST", "/api/answer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
        response = self._connection.getresponse()
        payload = json.loads(response.read())
        return response.status, payload, time.perf_counter() - started

    def close(self) -> None:
        self._connection.close()


def run_load(url: str, questions: list[dict], requests: int, clients: int, version: str | None) -> dict:
    local = threading.local()
    made: list[_Client] = []
    lock = threading.Lock()

    def one(i: int) -> tuple[int, dict, float]:
        if not hasattr(local, "client"):
            local.client = _Client(url)
            with lock:
                made.append(local.client)
        body = dict(questions[i % len(questions)])
        if version:
            body["version"] = version
        return local.client.ask(body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        started = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
    for client in made:
        client.close()
    ok = [(body, seconds) for status, body, seconds in results if status == 200]
    errors = [body.get("error", "") for status, body, _ in results if status != 200]
    latencies = np.asarray([seconds for _, seconds in ok] or [np.nan]) * 1000.0
    return {
        "requests": requests, "clients": clients, "ok": len(ok), "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 3), "requests_per_second": round(requests / elapsed, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "server_answer_ms_median": round(float(np.median([b["milliseconds"] for b, _ in ok] or [np.nan])), 1),
        "server_queued_ms_median": round(float(np.median([b["queued_milliseconds"] for b, _ in ok] or [np.nan])), 1),
        "versions": sorted({b["version"] for b, _ in ok}),
    }


def _start_server(args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "bertqa_cli", "serve", "--runs-dir", args.runs_dir, "--pipeline-name",
               args.pipeline_name, "--port", "0", "--interpreters", str(args.interpreters), "--data", args.data]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("bertqa serve: "):
        process.kill()
        raise SystemExit(f"the server did not start ({' '.join(command)}): {line!r}")
    return process, line.split()[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running `bertqa serve` (default: start one)")
    parser.add_argument("--runs-dir", default=os.path.join(REPO, "runs"))
    parser.add_argument("--pipeline-name", default="bertqa")
    parser.add_argument("--data", default=os.path.join(REPO, "data", "sample", "eval.json"))
    parser.add_argument("--version", default=None, help="the version asked (default the newest)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interpreters", type=int, default=2, help="per version, for the server started here")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)

    questions = questions_from(args.data)
    process = None
    url = args.url
    if url is None:
        process, url = _start_server(args)
    try:
        warm = run_load(url, questions, max(args.interpreters, 2), max(args.interpreters, 2), args.version)
        if warm["errors"]:
            raise SystemExit(f"the warm-up failed: {warm['first_error']}")
        result = run_load(url, questions, args.requests, args.clients, args.version)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
    result.update({"url": url, "interpreters": args.interpreters if process else None, "cpus": os.cpu_count(),
                   "machine": platform.processor() or platform.machine()})
    print(f"| requests | clients | p50 ms | p99 ms | requests/s | server ms (median) | waited ms (median) | errors |\n"
          f"|---|---|---|---|---|---|---|---|\n"
          f"| {result['requests']} | {result['clients']} | {result['p50_ms']} | {result['p99_ms']} | "
          f"{result['requests_per_second']} | {result['server_answer_ms_median']} | "
          f"{result['server_queued_ms_median']} | {result['errors']} |")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
