"""The stream publisher of the leader feed process (shard mode): the leader's order updates, stored
in the feed process's inbox by its FeedActor, go onto the stream in the order they were stored.

The feed actor routes to this actor as a single-process copier's feed routes to the router. Each
update is published with its dedupe key as message id, and marked done in the inbox (outcome
`published`) only once the stream server confirmed storing it. While the server cannot be reached
nothing is marked: the updates wait in the inbox, and every `retry_seconds` (and at start) the
oldest undone ones are published again, in order, before anything newer. A crash anywhere
between store and confirmation publishes an update again; the server's duplicate window and the
shards' inboxes drop the second copy.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol

from actors.feed import dedupe_key
from actors.messages import LEADER, OrderUpdateReceived, PublishPending
from observability import metrics
from storage import Store, StorageDown
from storage.inbox import InboxEvent
from streams import StreamUnavailable
from streams.wire import encode_update
from supervisors import Address, Supervised, Timers
from trading.orders import OrderUpdate, update_from_dict

log = logging.getLogger(__name__)

BATCH = 500  # stored updates read per round of catching up


class Publisher(Protocol):
    def publish(self, subject: str, data: bytes, msg_id: str, timeout: float = 3.0) -> int: ...


class StreamPublisher(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, *, store: Store, stream: Publisher,
                 subject: str, timers: Timers, retry_seconds: float = 1.0) -> None:
        super().__init__(address, supervisor)
        self.store, self.stream, self.subject, self.timers = store, stream, subject, timers
        self.retry_seconds = retry_seconds
        self._published_to = 0  # inbox ids up to this one are confirmed (ids grow in the order stored)
        self._behind = True  # stored updates wait to be published: newer ones queue behind them
        self._down_since: float | None = None

    def __repr__(self) -> str:
        return "StreamPublisher"

    def started(self) -> None:
        self.timers.every(self.retry_seconds, self.address, PublishPending(), owner=self.actor_ref)
        self._catch_up()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, OrderUpdateReceived):
            if message.event_id > self._published_to and not self._behind:
                wall_ns = time.time_ns() - max(0, time.monotonic_ns() - message.update.received_ns) \
                    if message.update.received_ns else time.time_ns()
                if not self._publish(message.event_id, message.update, wall_ns):
                    self._behind = True  # this one and every later one wait for the next round, in order
        elif isinstance(message, PublishPending):
            if self._behind:
                self._catch_up()
        return None

    def _catch_up(self) -> None:
        """Publish every stored, unconfirmed update, oldest first; stop at the first failure."""
        while True:
            try:
                events = self.store.inbox.pending(limit=BATCH)
            except StorageDown:
                return
            metrics.STREAM_UNPUBLISHED.set(len(events))
            for event in events:
                update = self._readable(event)
                if update is None:
                    continue
                if not self._publish(event.id, update, int(event.received_at * 1e9)):
                    return
            if len(events) < BATCH:
                self._behind = False
                metrics.STREAM_UNPUBLISHED.set(0)
                return

    def _readable(self, event: InboxEvent) -> OrderUpdate | None:
        try:
            return update_from_dict(json.loads(event.payload))
        except (ValueError, TypeError, KeyError) as exc:  # stored by another version: nothing to publish
            log.error("inbox event %s (leader order %s) cannot be read, not published: %s", event.id,
                      event.order_id, exc)
            metrics.MALFORMED_MESSAGES.labels("leader", "bad_shape").inc()
            self.store.inbox.acknowledge([event.id], "unreadable")
            return None

    def _publish(self, event_id: int, update: OrderUpdate, received_at_ns: int) -> bool:
        try:
            self.stream.publish(self.subject, encode_update(update, received_at_ns), dedupe_key(LEADER, update))
        except StreamUnavailable as exc:
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("leader updates are kept in the feed's inbox until the stream takes them: %s", exc)
            return False
        if self._down_since is not None:
            log.info("the stream takes the leader's updates again (after %.1fs)", time.monotonic() - self._down_since)
            self._down_since = None
        metrics.STREAM_PUBLISHED.inc()
        try:
            self.store.inbox.acknowledge([event_id], "published")
        except StorageDown:  # published, not marked: the next round publishes it again (a duplicate, dropped)
            return False
        self._published_to = max(self._published_to, event_id)
        return True
