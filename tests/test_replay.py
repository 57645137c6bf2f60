"""Replaying an order's event log rebuilds exactly its stored state, for every order
after a busy run (placements, modifications, partial fills, cancels, rejections, skips)."""
from __future__ import annotations

import subprocess
import sys

import yaml

from app.commands import replay_order
from storage import models as m
from tests.conftest import LEADER_ID, ROOT, wait_until
from trading.replay import fold_copy


def test_B_9_replay_rebuilds_every_order_exactly(make_rig, tmp_path):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
                              {"name": "f2", "sizing": {"strategy": "fixed_lots", "lots": 2}}],
                   exchange={"rate_limits": {"per_second": 50}})
    ids = [rig.place(quantity=10 + 4 * i, price=1410.0 + i) for i in range(6)]
    ids.append(rig.place(order_type="MARKET", quantity=8))
    ids.append(rig.place(quantity=1))  # f1: rounds to zero, a skip
    for leader_id in ids[:6]:
        rig.follower_copy(leader_id)
    rig.modify(ids[0], price=1405.0, quantity=30)
    rig.modify(ids[0], price=1406.0)
    rig.cancel(ids[1])
    rig.exchange.fill(LEADER_ID, ids[2], qty=6)
    rig.exchange.fill(LEADER_ID, ids[3])
    placed = rig.wait_row(ids[3], lambda r: r.broker_order_id is not None, message="placement answer stored")
    rig.exchange.fill(rig.follower_ids["f1"], placed.broker_order_id)
    rig.wait_copy(ids[0], lambda c: c["price"] == 1406.0 and c["quantity"] == 15, message="modified")
    rig.wait_copy(ids[1], lambda c: c["orderStatus"] == "CANCELLED", message="cancelled")
    rig.wait_row(ids[3], lambda r: r.status == "TRADED", message="f1 filled")
    wait_until(lambda: rig.store.read(lambda: m.InboundEvent.select().where(m.InboundEvent.done == False).count()) == 0,  # noqa: E712
               message="every update processed")
    rig.copier.stop()  # replay what is at rest
    for leader_id in ids:
        ok, lines = replay_order(rig.store, leader_id)
        assert ok, "\n".join(lines)

    config = tmp_path / "replay.yaml"
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["storage"]["path"] = rig.config.storage.path
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "run.py", "--config", str(config), "replay", ids[0]], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MODIFY_ACKED" in result.stdout and "rebuilt state matches stored state: yes" in result.stdout


def test_the_copy_fold_follows_an_unknown_placement_until_the_broker_answers():
    target = {"security_id": "2885", "exchange_segment": "NSE_EQ", "side": "BUY", "product": "INTRADAY",
              "order_type": "LIMIT", "validity": "DAY", "quantity": 5, "price": 1430.0, "trigger_price": 0.0,
              "disclosed_qty": 0, "amo": False, "amo_time": None}
    events = [("SUBMITTED", {"status": "PENDING_PLACEMENT", "target": target}),
              ("OUTCOME_UNKNOWN", {"error": "HTTP-502 server: HTTP 502 without an error code"})]
    assert fold_copy(events)["status"] == "UNKNOWN" and fold_copy(events)["broker_order_id"] is None
    events += [("NOT_PLACED", {"placements": 1}), ("OUTCOME_UNKNOWN", {"error": "TRANSPORT network: timed out"}),
               ("FOUND_BY_CORRELATION_ID", {"broker_order_id": "F7"}),
               ("ACCEPTED", {"order_id": "F7", "status": "PENDING", "filled_qty": 0})]
    state = fold_copy(events)
    assert (state["status"], state["broker_order_id"]) == ("PENDING", "F7")
