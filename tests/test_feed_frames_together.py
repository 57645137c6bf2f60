"""Frames that reach a feed together (a copy's PENDING and TRADED, a fan-out's echoes) are stored
together and routed in the order they came; a frame that crashes the feed is still the one named
(and parked), the frames before it kept."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import actors.feed as feed_module
from actors.feed import FeedActor, SocketFrame
from actors.messages import OrderUpdateReceived
from storage import Store
from supervisors import Address
from supervisors.pool import CrashedOn
from tests.frames import order_alert_text

FOLLOWER_ID = "1200000001"


class Router:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any, inline: bool = False) -> None:
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
