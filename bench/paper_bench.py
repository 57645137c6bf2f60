"""Paper exchange throughput and answer latency under order load.

Runs `python -m paper` in a subprocess (so the load generator does not share its GIL) and
drives it from one thread per account over keep-alive HTTP with place -> modify -> cancel
cycles of resting LIMIT orders. Prints order calls/s and p50/p99 answer latency.
Target on 2 cores: >= 500 order calls/s, p99 < 5 ms.

    python bench/paper_bench.py [--threads 4] [--seconds 5]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def start_exchange(accounts: int) -> tuple[subprocess.Popen[str], str, list[tuple[str, str]]]:
    cmd = [sys.executable, "-m", "paper", "--port", "0", "--unlimited", "--no-price-walk", "--accounts", str(accounts)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    rest, creds = "", []
    assert proc.stdout is not None
    for line in proc.stdout:
        word, *rest_of = line.split()
        if word == "REST":
            rest = rest_of[0]
        elif word == "ACCOUNT":
            creds.append((rest_of[0], rest_of[1]))
        elif word == "READY":
            return proc, rest, creds
    raise RuntimeError("paper exchange did not start")


def worker(rest_url: str, client_id: str, token: str, until: float, latencies: list[float], errors: list[str]) -> None:
    u = urlparse(rest_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    headers = {"access-token": token, "client-id": client_id, "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body) if body is not None else None
        t0 = time.perf_counter()
        conn.request(method, u.path + path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        latencies.append(time.perf_counter() - t0)
        if resp.status != 200:
            errors.append(payload.decode()[:200])
        return json.loads(payload)

    order = {"dhanClientId": client_id, "transactionType": "BUY", "exchangeSegment": "NSE_EQ",
             "productType": "INTRADAY", "orderType": "LIMIT", "validity": "DAY", "securityId": "2885",
             "quantity": 1, "price": 1400.0, "triggerPrice": 0, "disclosedQuantity": 0, "afterMarketOrder": False}
    n = 0
    while time.perf_counter() < until:
        n += 1
        placed = call("POST", "/orders", {**order, "correlationId": f"b{client_id[-3:]}-{n}"})
        oid = placed.get("orderId")
        if not oid:
            continue
        call("PUT", f"/orders/{oid}", {"dhanClientId": client_id, "orderId": oid, "orderType": "LIMIT",
                                       "quantity": 2, "price": 1399.5, "triggerPrice": 0, "disclosedQuantity": 0,
                                       "validity": "DAY", "legName": ""})
        call("DELETE", f"/orders/{oid}")
    conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=4, help="load threads, one account each")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    proc, rest_url, creds = start_exchange(args.threads)
    try:
        latencies: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        until = start + args.seconds
        threads = [threading.Thread(target=worker, args=(rest_url, cid, tok, until, latencies, errors))
                   for cid, tok in creds[: args.threads]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(5)
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(f"threads/accounts : {args.threads}")
    print(f"order calls      : {len(lat)} in {elapsed:.2f} s (place/modify/cancel)")
    print(f"throughput       : {len(lat) / elapsed:.0f} order calls/s")
    print(f"latency p50      : {p50:.2f} ms")
    print(f"latency p99      : {p99:.2f} ms")
    print(f"errors           : {len(errors)}" + (f" e.g. {errors[0]}" if errors else ""))


if __name__ == "__main__":
    main()
