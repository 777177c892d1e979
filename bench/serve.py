#!/usr/bin/env python3
"""Serving benchmark (not a test): N concurrent streaming clients against `swiftlet serve` on
loopback for a fixed time each; reports aggregate generated tokens/s and p50/p99 time to first
token and inter-token latency.

    python3 bench/serve.py [--bin .build/release/swiftlet] [--model smollm2] [--clients 1,4,16,32]
                           [--seconds 30] [--max-tokens 64] [--url http://127.0.0.1:PORT]  # existing server

Without --url it starts the server itself (--parallel = the largest client count).
"""
import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "List some facts about the moon.",
    "Describe your ideal breakfast.",
    "What makes a good friend?",
    "Explain photosynthesis to a child.",
    "Write a poem about autumn rain.",
    "Give advice to a new programmer.",
]


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def client_loop(host, port, model, max_tokens, deadline, index, out):
    n = 0
    while time.time() < deadline:
        body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0.7, "seed": index * 1000 + n,
                "messages": [{"role": "user", "content": PROMPTS[(index + n) % len(PROMPTS)]}]}
        n += 1
        conn = http.client.HTTPConnection(host, port, timeout=300)
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            r.read()
            out["errors"] += 1
            conn.close()
            time.sleep(0.1)
            continue
        last = None
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            chunk = json.loads(payload)
            if not chunk.get("choices") or not chunk["choices"][0]["delta"].get("content"):
                continue
            now = time.perf_counter()
            if last is None:
                out["ttft"].append(now - start)
            else:
                out["itl"].append(now - last)
            last = now
            # One content chunk per token here (the server sends one per sampled token that
            # completes text), so chunks count tokens closely; usage below is exact.
            out["chunks"] += 1
        conn.close()
        if time.time() < deadline + 60:
            out["requests"] += 1


def run_level(host, port, model, clients, seconds, max_tokens):
    out = {"ttft": [], "itl": [], "chunks": 0, "requests": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.time() + seconds
    before = metric(host, port, "swiftlet_generation_tokens_total")
    start = time.time()
    threads = [threading.Thread(target=client_loop, args=(host, port, model, max_tokens, deadline, i, out))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    generated = metric(host, port, "swiftlet_generation_tokens_total") - before
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": out["requests"], "errors": out["errors"],
        "generated_tokens": int(generated), "tokens_per_second": round(generated / elapsed, 1),
        "ttft_p50_ms": round(percentile(out["ttft"], 50) * 1000, 1),
        "ttft_p99_ms": round(percentile(out["ttft"], 99) * 1000, 1),
        "itl_p50_ms": round(percentile(out["itl"], 50) * 1000, 1),
        "itl_p99_ms": round(percentile(out["itl"], 99) * 1000, 1),
    }


def metric(host, port, name):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=".build/release/swiftlet")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--clients", default="1,4,16,32")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--url", default=None)
    p.add_argument("--json", default=None, help="write the results to this file")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    proc = None
    if args.url:
        u = urllib.parse.urlparse(args.url)
        host, port = u.hostname, u.port
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        host = "127.0.0.1"
        proc = subprocess.Popen([args.bin, "serve", args.model, "--port", str(port), "--parallel", str(max(levels)),
                                 "--ctx", "1024", "--log-level", "warning"])
        for _ in range(600):
            try:
                conn = http.client.HTTPConnection(host, port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/v1/models")
    model = json.loads(conn.getresponse().read())["data"][0]["id"]
    results = []
    print(f"{'clients':>7} {'tok/s':>8} {'reqs':>5} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8}  (ms)")
    try:
        for c in levels:
            r = run_level(host, port, model, c, args.seconds, args.max_tokens)
            results.append(r)
            print(f"{c:>7} {r['tokens_per_second']:>8} {r['requests']:>5} {r['ttft_p50_ms']:>9} {r['ttft_p99_ms']:>9} "
                  f"{r['itl_p50_ms']:>8} {r['itl_p99_ms']:>8}", flush=True)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": model, "max_tokens": args.max_tokens, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
