"""Load test of `transduce serve` on loopback: N requests (one text each) from C concurrent
clients, with dynamic batching on and then off; prints errors, latency percentiles and
throughput as JSON. The server is the real CLI in its own process.

    python benchmarks/serve_load.py --model runs/demo --data transduce/assets/csl-title/test.tsv.gz \\
        --requests 10000 --clients 32

Each mode is bounded by --time-limit seconds: requests not sent by then are reported as not
sent (never silently dropped). On a two-core machine the clients share the CPU with the
server, so the figures are a floor.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from transduce.data.readers import read_pairs  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, batching: bool, threads: int, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "transduce", "serve", "--model", model, "--port", str(port), *extra]
    if not batching:
        command.append("--no-batching")
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)


async def load(url: str, texts: list[str], requests: int, clients: int, time_limit: float, options: dict) -> dict:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    output_tokens = 0
    next_index = 0
    start = time.perf_counter()
    deadline = start + time_limit

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, output_tokens
        while next_index < requests and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            body = {"texts": [texts[index % len(texts)]], **options}
            sent = time.perf_counter()
            try:
                r = await http.post(f"{url}/v1/translate", json=body)
                status = str(r.status_code)
                if r.status_code == 200:
                    output_tokens += sum(len(o["tokens"]) for res in r.json()["results"] for o in res["outputs"][:1])
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - sent)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    done = len(latencies)

    def percentile(p: float) -> float:
        return round(latencies[min(done - 1, int(p * done))] * 1000, 1) if done else float("nan")

    return {"requests_sent": done, "not_sent": requests - done, "statuses": statuses,
            "errors": done - statuses.get("200", 0), "seconds": round(elapsed, 2),
            "requests_per_s": round(done / elapsed, 1), "output_tokens_per_s": round(output_tokens / elapsed, 1),
            "latency_ms": {"p50": percentile(0.50), "p90": percentile(0.90), "p99": percentile(0.99),
                           "mean": round(statistics.fmean(latencies) * 1000, 1) if done else None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="pairs whose sources are sent (.tsv/.jsonl[.gz])")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=600, help="seconds per mode")
    parser.add_argument("--beam", type=int, default=None, help="decoding beam (default: the model's)")
    parser.add_argument("--threads", type=int, default=2, help="server torch threads")
    parser.add_argument("--modes", default="batching,no-batching")
    parser.add_argument("--server-args", default="", help="more `transduce serve` flags, space-separated")
    args = parser.parse_args()
    texts = [p.source for p in read_pairs(args.data)]
    options = {} if args.beam is None else {"beam": args.beam}
    report = {"model": args.model, "requests": args.requests, "clients": args.clients, "texts": len(texts),
              "options": options, "cpus": os.cpu_count()}
    for mode in args.modes.split(","):
        port = free_port()
        server = start_server(args.model, port, mode == "batching", args.threads, args.server_args.split())
        try:
            url = f"http://127.0.0.1:{port}"
            report[mode] = asyncio.run(load(url, texts, args.requests, args.clients, args.time_limit, options))
            metrics = httpx.get(f"{url}/metrics").text
            sizes = {k: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     for k in ("count", "sum") if line.startswith(f"transduce_batch_size_texts_{k} ")}
            report[mode]["mean_batch_texts"] = round(sizes["sum"] / max(sizes["count"], 1), 2)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if "batching" in report and "no-batching" in report:
        report["throughput_ratio"] = round(report["batching"]["requests_per_s"]
                                           / max(report["no-batching"]["requests_per_s"], 1e-9), 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
