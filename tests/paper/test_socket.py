"""Order-update socket: Dhan's login, every change announced, drops, refusals, dup/reorder faults."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import websocket
from tests.paper.paper_support import FOLLOWER, LEADER, Feed, buy, client, make_exchange, order_id

from paper import PaperExchange


def test_alerts_follow_an_order_through_its_life(ex: PaperExchange, dhan, feed: Feed) -> None:
    oid = order_id(buy(dhan, 5, order_type="LIMIT", price=1400.0, tag="c-1"))
    dhan.modify_order(oid, "LIMIT", "", 6, 1401.0, 0, 0, "DAY")
    ex.fill(LEADER, oid, qty=2)
    dhan.cancel_order(oid)
    assert feed.wait(lambda f: len(f.alerts(oid)) == 4)
    first, modified, part, cancelled = feed.alerts(oid)
    assert first["Status"].upper() == "PENDING" and first["CorrelationId"] == "c-1"
    assert (first["TxnType"], first["Product"], first["OrderType"], first["Exchange"], first["Segment"]) == ("B", "I", "LMT", "NSE", "E")
    assert (modified["Quantity"], modified["Price"]) == (6, 1401.0)
    assert (part["Status"].upper(), part["TradedQty"], part["RemainingQuantity"], part["TradedPrice"]) == ("PART_TRADED", 2, 4, 1401.0)
    assert cancelled["Status"].upper() == "CANCELLED"
    assert [a["Sequence"] for a in feed.alerts(oid)] == [1, 2, 3, 4]
    for key in ("OrderNo", "ExchOrderNo", "SecurityId", "Symbol", "ProductName", "Validity", "DiscQuantity",
                "AvgTradedPrice", "ReasonDescription", "LegNo", "Instrument", "OptType", "StrikePrice",
                "ExpiryDate", "LotSize", "OrderDateTime", "LastUpdatedTime", "OffMktFlag"):
        assert key in first


def test_rejection_is_announced(ex: PaperExchange, dhan, feed: Feed) -> None:
    ex.set_funds(LEADER, 100)
    oid = order_id(buy(dhan, 10, product="CNC"))
    assert feed.wait(lambda f: any(a["Status"].upper() == "REJECTED" for a in f.alerts(oid)))
    assert "insufficient margin" in feed.alerts(oid)[-1]["ReasonDescription"]


def test_only_own_account_updates_arrive(ex: PaperExchange, feed: Feed) -> None:
    from tests.paper.paper_support import FOLLOWER_TOKEN, client
    other = client(ex, FOLLOWER, FOLLOWER_TOKEN)
    theirs = order_id(buy(other, 1))
    follower_feed = Feed(ex, FOLLOWER, FOLLOWER_TOKEN)
    try:
        assert ex.wait_for(lambda e: e.socket_count(FOLLOWER) == 1)
        mine = order_id(buy(other, 1))
        assert follower_feed.wait(lambda f: len(f.alerts(mine)) >= 2)
        assert not feed.alerts(theirs) and not feed.alerts(mine)
    finally:
        follower_feed.close()


def test_bad_login_is_closed(ex: PaperExchange) -> None:
    bad = Feed(ex, LEADER, "wrong-token")
    assert bad.closed.wait(5)
    assert bad.messages and bad.messages[0]["errorCode"] == "DH-901"
    assert ex.socket_count(LEADER) == 0


def test_drop_then_reconnect_and_resync_from_the_book(ex: PaperExchange, dhan, feed: Feed) -> None:
    ex.faults.drop_sockets()
    assert feed.closed.wait(5)
    assert ex.wait_for(lambda e: e.socket_count(LEADER) == 0)
    missed = order_id(buy(dhan, 1))           # happens while nobody listens
    again = Feed(ex)
    try:
        assert ex.wait_for(lambda e: e.socket_count(LEADER) == 1)
        assert missed in [o["orderId"] for o in dhan.get_order_list()["data"]]
        nxt = order_id(buy(dhan, 1))
        assert again.wait(lambda f: len(f.alerts(nxt)) >= 2) and not again.alerts(missed)
    finally:
        again.close()


def test_refused_reconnects_for_a_while(ex: PaperExchange, feed: Feed) -> None:
    ex.faults.refuse_reconnects(0.5)
    ex.faults.drop_sockets()
    assert feed.closed.wait(5)
    refused = Feed(ex)
    assert refused.closed.wait(5) and ex.socket_count(LEADER) == 0
    accepted = None

    def reconnect(e: PaperExchange) -> bool:
        nonlocal accepted
        accepted = Feed(e)
        return not accepted.closed.wait(0.2) and e.socket_count(LEADER) == 1
    assert ex.wait_for(reconnect, 5)
    assert accepted is not None
    accepted.close()


def test_duplicate_messages(ex: PaperExchange, dhan, feed: Feed) -> None:
    ex.faults.duplicate_messages(1.0)
    oid = order_id(buy(dhan, 1))
    assert feed.wait(lambda f: len(f.alerts(oid)) == 4)     # PENDING, TRADED, each twice
    assert [a["Sequence"] for a in feed.alerts(oid)] == [1, 1, 2, 2]


def test_lagging_messages_arrive_late_and_in_order(ex: PaperExchange, dhan, feed: Feed) -> None:
    ex.faults.delay_messages(0.5, client_id=LEADER)
    placed = time.monotonic()
    oid = order_id(buy(dhan, 1))
    assert ex.order(LEADER, oid)["orderStatus"] == "TRADED" and not feed.alerts(oid)
    assert feed.wait(lambda f: len(f.alerts(oid)) == 2)
    assert time.monotonic() - placed >= 0.5
    assert [a["Sequence"] for a in feed.alerts(oid)] == [1, 2] and ex.faults.counts()["lagged"] == 2
    ex.faults.clear()
    prompt = order_id(buy(dhan, 1))
    assert feed.wait(lambda f: len(f.alerts(prompt)) == 2, 0.4)


def test_reordered_messages_all_arrive(ex: PaperExchange, dhan, feed: Feed) -> None:
    ex.faults.reorder_messages(1.0)
    oid = order_id(buy(dhan, 1))
    assert feed.wait(lambda f: len(f.alerts(oid)) == 2)
    assert sorted(a["Sequence"] for a in feed.alerts(oid)) == [1, 2]
    assert [a["Sequence"] for a in feed.alerts(oid)] == [2, 1]


def test_frames_carry_no_sequence_when_the_exchange_leaves_it_out() -> None:
    ex = make_exchange(sequence=False)
    feed = Feed(ex)
    try:
        dhan = client(ex)
        oid = order_id(buy(dhan, 5, order_type="LIMIT", price=1400.0))
        dhan.modify_order(oid, "LIMIT", "", 6, 1401.0, 0, 0, "DAY")
        assert feed.wait(lambda f: len(f.alerts(oid)) == 2)
        assert all("Sequence" not in alert for alert in feed.alerts(oid))
        assert [a["Quantity"] for a in feed.alerts(oid)] == [5, 6]
    finally:
        feed.close()
        ex.stop()


def test_same_second_reordering_swaps_only_frames_stamped_with_one_second() -> None:
    now = [datetime(2026, 3, 2, 5, 0, 0, tzinfo=timezone.utc)]
    ex = make_exchange(clock=lambda: now[0])
    feed = Feed(ex)
    try:
        assert ex.wait_for(lambda e: e.socket_count(LEADER) == 1, 5)
        ex.faults.reorder_messages(1.0, same_second=True)
        dhan = client(ex)
        oid = order_id(buy(dhan, 5, order_type="LIMIT", price=1400.0))      # held
        now[0] += timedelta(seconds=1)
        dhan.modify_order(oid, "LIMIT", "", 6, 1400.0, 0, 0, "DAY")         # a later second: after it, held
        dhan.modify_order(oid, "LIMIT", "", 7, 1400.0, 0, 0, "DAY")         # same second: overtakes it
        assert feed.wait(lambda f: len(f.alerts(oid)) == 3)
        assert [a["Quantity"] for a in feed.alerts(oid)] == [5, 7, 6]
    finally:
        feed.close()
        ex.stop()


def test_raw_frames_no_parser_can_read_all_arrive_while_frames_are_reordered_within_a_second(ex: PaperExchange) -> None:
    ws = websocket.create_connection(ex.ws_url, timeout=5)
    try:
        ws.send(json.dumps({"LoginReq": {"MsgCode": 42, "ClientId": LEADER, "Token": "tok-leader"}, "UserType": "SELF"}))
        assert ex.wait_for(lambda e: e.socket_count(LEADER) == 1, 5)
        ex.faults.reorder_messages(1.0, same_second=True)
        deep = '{"Type": "order_alert", "Data": ' + "[" * 100_000 + "]" * 100_000 + "}"
        sent = [deep, "{not json", '{"Type": "order_alert", "Data": []}']
        for text in sent:
            ex.send_raw(LEADER, text)
        assert sorted(ws.recv() for _ in sent) == sorted(sent)
    finally:
        ws.close()
