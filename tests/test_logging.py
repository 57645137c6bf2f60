"""Logs: one JSON object per line off a terminal, with the leader order id and the follower on
every order-related line (tokens redacted: see tests/test_config_and_secrets.py)."""
from __future__ import annotations

import io
import json
import logging

from observability import logs, metrics
from tests.conftest import wait_until


def test_order_lines_carry_leader_order_id_and_follower(make_rig):
    stream = io.StringIO()
    level = logging.getLogger().level
    handler = logs.setup("INFO", json_lines=True, stream=stream)
    try:
        rig = make_rig(config={"copy": {"sweep_seconds": 0.2}})
        leader_id = rig.place(quantity=10, price=1430.0)
        rig.wait_row(leader_id, lambda r: r.broker_order_id is not None, message="copy placed")
        wait_until(lambda: metrics.OPEN_ORDERS.labels("f1")._value.get() == 1, message="open orders exported")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    placed = [l for l in lines if l["logger"] == "actors.order" and "place of leader order" in l["message"]]
    assert placed and placed[0]["leader_order_id"] == leader_id and placed[0]["follower"] == "f1"
    assert all("leader_order_id" in l for l in lines if l["logger"] == "actors.order")
