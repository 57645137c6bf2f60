"""Frames that reach a feed together (a copy's PENDING and TRADED, a fan-out's echoes) are stored
together and routed in the order they came; a frame that crashes the feed is still the one named
(and parked), the frames before it kept."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import actors.feed as feed_module
from actors.feed import FeedActor, SocketFrame
from actors.messages import OrderUpdateReceived, PlacementAnswered
from observability import metrics
from storage import Store
from supervisors import Address
from supervisors.pool import CrashedOn
from tests.frames import order_alert_text
from trading import copy as c
from trading.orders import OrderStatus, OrderTerms, OrderType, Product, Side, Validity

FOLLOWER_ID = "1200000001"


class Router:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def feed(tmp_path: Path) -> tuple[FeedActor, Store, Router]:
    store = Store(str(tmp_path / "copytrader.db"))
    router = Router()
    actor = FeedActor(Address("feed:f1"), None, account="f1", url="ws://127.0.0.1:9",
                      gateway=None, store=store, router=router, sockets=None, timers=None)  # type: ignore[arg-type]
    return actor, store, router


def frames(*alerts: dict[str, Any]) -> list[SocketFrame]:
    return [SocketFrame(order_alert_text(FOLLOWER_ID, **fields).encode(), i) for i, fields in enumerate(alerts)]


def test_frames_that_arrive_together_are_each_stored_once_and_routed_in_order(tmp_path):
    actor, store, router = feed(tmp_path)
    batch = frames({"OrderNo": "F1", "Status": "PENDING"}, {"OrderNo": "F1", "Status": "TRADED", "TradedQty": 5},
                   {"OrderNo": "F2", "Status": "PENDING"}, {"OrderNo": "F1", "Status": "TRADED", "TradedQty": 5})
    assert all(actor.takes_in_batch(frame) for frame in batch)

    actor.on_receive_batch(batch)

    routed = [(m.update.order_id, m.update.status.value) for m in router.told if isinstance(m, OrderUpdateReceived)]
    assert routed == [("F1", "PENDING"), ("F1", "TRADED"), ("F2", "PENDING")]  # the repeated TRADED: once
    stored = store.inbox.pending()
    assert [(e.order_id, e.id) for e in stored] == [(m.update.order_id, m.event_id) for m in router.told]
    store.close()


def test_a_frame_that_crashes_storing_is_named_and_the_frames_before_it_are_kept(tmp_path, monkeypatch):
    actor, store, router = feed(tmp_path)
    original = feed_module.update_to_dict

    def update_to_dict(update):  # a bug that one frame hits while it is stored
        if update.order_id == "BAD":
            raise ValueError("a bug this frame hits")
        return original(update)

    monkeypatch.setattr(feed_module, "update_to_dict", update_to_dict)
    batch = frames({"OrderNo": "F1", "Status": "PENDING"}, {"OrderNo": "BAD", "Status": "PENDING"},
                   {"OrderNo": "F3", "Status": "PENDING"})

    with pytest.raises(CrashedOn) as crash:
        actor.on_receive_batch(batch)

    assert crash.value.message is batch[1] and isinstance(crash.value.error, ValueError)
    assert [m.update.order_id for m in router.told] == ["F1"]
    assert [e.order_id for e in store.inbox.pending()] == ["F1"]  # the batch's transaction rolled back whole
    store.close()


# -- a placement's echo that says only what its answer said: neither stored nor routed ------------------------
CID = "CT0123456789ABCDEF012345"


def answered(order_no: str, status: str | None = "PENDING", quantity: int = 10, price: float = 1400.0):
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, quantity, price)
    return PlacementAnswered(c.Placed(order_no, OrderStatus(status) if status else None, terms), CID)


def test_the_echo_of_an_answered_placement_is_not_stored_and_what_follows_it_is(tmp_path):
    actor, store, router = feed(tmp_path)
    dropped = metrics.ANSWERED_ECHOES._value.get()
    actor.on_receive(answered("F1"))
    actor.on_receive_batch(frames({"OrderNo": "F1", "Status": "PENDING", "CorrelationId": CID},
                                  {"OrderNo": "F1", "Status": "TRADED", "TradedQty": 10, "CorrelationId": CID,
                                   "AvgTradedPrice": 1400.0, "TradedPrice": 1400.0}))

    assert [(m.update.order_id, m.update.status.value) for m in router.told] == [("F1", "TRADED")]
    assert [e.order_id for e in store.inbox.pending()] == ["F1"]
    assert metrics.ANSWERED_ECHOES._value.get() == dropped + 1
    store.close()


@pytest.mark.parametrize("hint, echo", [
    (answered("F1", status="TRANSIT"), {"Status": "PENDING"}),  # a step the answer did not say
    (answered("F1"), {"Status": "PENDING", "Quantity": 5}),  # not the terms sent
    (answered("F1"), {"Status": "PENDING", "CorrelationId": "CT9999999999ABCDEF012345"}),  # another copy's
    (answered("F2"), {"Status": "PENDING"}),  # another order's answer
    (answered("F1"), {"Status": "PART_TRADED", "TradedQty": 4}),  # a fill
], ids=["another status", "other terms", "another correlation id", "another order", "a fill"])
def test_an_echo_that_says_more_than_its_answer_is_stored_and_routed(tmp_path, hint, echo):
    actor, store, router = feed(tmp_path)
    actor.on_receive(hint)
    actor.on_receive_batch(frames({"OrderNo": "F1", "CorrelationId": CID, **echo}))

    assert [m.update.order_id for m in router.told] == ["F1"]
    assert [e.order_id for e in store.inbox.pending()] == ["F1"]
    store.close()


def test_an_echo_that_came_before_its_answer_is_stored_and_routed(tmp_path):
    actor, store, router = feed(tmp_path)
    actor.on_receive_batch(frames({"OrderNo": "F1", "Status": "PENDING", "CorrelationId": CID}))
    actor.on_receive(answered("F1"))

    assert [m.update.order_id for m in router.told] == ["F1"]
    assert [e.order_id for e in store.inbox.pending()] == ["F1"]
    store.close()
