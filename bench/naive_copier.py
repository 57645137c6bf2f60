"""The naive copier: the baseline bench/replication_bench.py measures the copier against.

Socket in, `dhanhq.place_order` out, and nothing else: one websocket-client connection to the
leader's order-update socket; the first frame of each leader order is placed for every follower,
one after the other, on the socket's own thread, with the official client (one `dhanhq` per
follower, each keeping its connection alive). Nothing is stored, sized, checked or looked up, so
it is the floor a copier that does its job is compared with, not a copier anyone should run.

    python bench/naive_copier.py --ws URL --rest URL --leader CID:TOKEN --followers FILE --out FILE

FILE: a JSON list of [client_id, token] of the followers, in fan-out order. It runs until SIGTERM,
then writes to --out one row per copy: [leader order id, follower index, frame received (ns),
placement call started (ns), answer read (ns), ok, the copy's order id], the times on CLOCK_MONOTONIC (shared by every
process of the machine), and exits.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any

import websocket
from dhanhq import DhanContext, dhanhq

# What the order-update socket says, as the REST placement wants it (the few codes a leader uses).
SEGMENTS = {("NSE", "E"): "NSE_EQ", ("BSE", "E"): "BSE_EQ", ("NSE", "D"): "NSE_FNO", ("BSE", "D"): "BSE_FNO"}
PRODUCTS = {"I": "INTRADAY", "C": "CNC", "M": "MARGIN", "F": "MTF"}
ORDER_TYPES = {"LMT": "LIMIT", "MKT": "MARKET", "SL": "STOP_LOSS", "SLM": "STOP_LOSS_MARKET"}


def client(rest_url: str, client_id: str, token: str) -> dhanhq:
    context = DhanContext(client_id, token)
    http = context.get_dhan_http()
    http.base_url = rest_url
    http.timeout = 5
    return dhanhq(context)


class NaiveCopier:
    def __init__(self, rest_url: str, followers: list[tuple[str, str]]) -> None:
        self.followers = [client(rest_url, cid, token) for cid, token in followers]
        self.seen: set[str] = set()
        self.rows: list[list[Any]] = []

    def on_frame(self, raw: str) -> None:
        received = time.monotonic_ns()
        message = json.loads(raw)
        if message.get("Type") != "order_alert":
            return
        data = message["Data"]
        order_id = str(data["OrderNo"])
        if order_id in self.seen:
            return
        self.seen.add(order_id)
        for index, follower in enumerate(self.followers):
            started = time.monotonic_ns()
            answer = follower.place_order(
                security_id=str(data["SecurityId"]),
                exchange_segment=SEGMENTS[(data["Exchange"], data["Segment"])],
                transaction_type="BUY" if data["TxnType"] == "B" else "SELL", quantity=int(data["Quantity"]),
                order_type=ORDER_TYPES[data["OrderType"]], product_type=PRODUCTS[data["Product"]],
                price=float(data["Price"]), trigger_price=float(data["TriggerPrice"]), validity=data["Validity"],
                tag=f"nv{order_id}x{index}"[:25])
            ok = answer.get("status") == "success"
            self.rows.append([order_id, index, received, started, time.monotonic_ns(), ok,
                              str(answer["data"].get("orderId", "")) if ok else ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ws", required=True)
    p.add_argument("--rest", required=True)
    p.add_argument("--leader", required=True, help="CLIENT_ID:TOKEN")
    p.add_argument("--followers", required=True, help="JSON file: [[client_id, token], ...]")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    leader_id, _, leader_token = args.leader.partition(":")
    with open(args.followers) as f:
        followers = [(str(cid), str(token)) for cid, token in json.load(f)]
    copier = NaiveCopier(args.rest, followers)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    lock = threading.Lock()  # the rows are written out while the socket thread may still copy

    def on_message(_ws: websocket.WebSocketApp, raw: str) -> None:
        with lock:
            copier.on_frame(raw)

    ws = websocket.WebSocketApp(
        args.ws, on_message=on_message,
        on_open=lambda w: w.send(json.dumps({"LoginReq": {"MsgCode": 42, "ClientId": leader_id,
                                                          "Token": leader_token}, "UserType": "SELF"})))
    thread = threading.Thread(target=ws.run_forever, name="naive-socket", daemon=True)
    thread.start()
    print("READY", flush=True)
    done.wait()
    ws.close()
    with lock:
        with open(args.out, "w") as f:
            json.dump(copier.rows, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
