"""A follower shard's leader feed: the leader's order updates as the feed process published them on
the stream, instead of the leader's socket. Everything after the inbox is the single-process
copier's: this actor stores each update in the shard's own inbox, routes it, and only then
acknowledges it to the stream server.

A thread reads the shard's durable consumer (as the socket hub reads FeedActor's socket) and
tells each batch to this actor. Per delivery:
- stored (or an exact duplicate of a stored one: a redelivery, a republished update): acknowledged;
- storage down: not acknowledged (delivered again after a second); as with the socket, an order
  first seen then is recorded as a skip once storage is back, never copied late;
- unreadable: counted as malformed, logged and acknowledged (delivering it again cannot help).

At the shard's first start (its storage holds no baseline), the consumer starts at the stream's
end and the leader's order book, read through the shard's own leader account, is its baseline, as
for a single copier's first start: copies found at this shard's followers are adopted, the other
orders are pre-existing. Later starts read on from the last acknowledged update; when the stream
no longer keeps some of what followed it (the shard was away longer than `stream.max_age_hours`),
the leader's order book fills the gap, as after a socket reconnect.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from actors.feed import BASELINE_SETTING, FeedActor, store_and_route
from actors.stream_reader import Consumer, Stream, StreamClosed, StreamDelivered, StreamOpened, StreamReader
from observability import metrics
from storage import StorageDown
from streams.wire import BadStreamMessage, decode_update
from supervisors import Address

log = logging.getLogger(__name__)

REDELIVER_AFTER = 1.0  # seconds before a delivery that could not be stored comes again


class StreamFeedActor(FeedActor):
    def __init__(self, address: Address, supervisor: Address | None, *, stream: Stream, durable: str, subject: str,
                 **feed: Any) -> None:
        """`feed`: FeedActor's arguments (the leader's gateway reads the order book for the baseline)."""
        super().__init__(address, supervisor, **feed)
        self.stream, self.durable, self.subject = stream, durable, subject
        self._consumer: Consumer | None = None
        self._reader: StreamReader | None = None
        self._baselined = False

    def __repr__(self) -> str:
        return f"StreamFeedActor({self.durable})"

    def started(self) -> None:
        self._unwatch = self.store.watch_health(self._on_storage_health)
        self._reader = StreamReader(self.stream, self.durable, self.subject, self.address,
                                    fresh=self._first_start).start()

    def _shutdown(self) -> None:
        super()._shutdown()
        if self._reader is not None:
            self._reader.stop()

    def _first_start(self) -> bool:
        try:
            return self.store.settings.get(BASELINE_SETTING) is None
        except StorageDown:
            return False  # read on from the last acknowledged update; the baseline waits for storage

    # -- messages ------------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StreamOpened):
            self._on_stream_opened(message)
        elif isinstance(message, StreamDelivered):
            self._on_delivered(message)
        elif isinstance(message, StreamClosed):
            self.connected = False
            metrics.FEED_CONNECTED.labels(self.account).set(0)
        else:
            return super().on_receive(message)
        return None

    def _on_stream_opened(self, opened: StreamOpened) -> None:
        if self._reader is None or opened.conn != self._reader.conn:
            return
        self._consumer = opened.consumer
        if self._baseline() and getattr(opened.consumer, "missed", False):
            self._recover_dropped()
        self.connected = True
        metrics.FEED_CONNECTED.labels(self.account).set(1)
        log.info("%s: reading the leader's updates from the stream", self.durable)

    def _baseline(self) -> bool:
        """At a first start, the leader's order book before any update from the stream."""
        if not self._baselined:
            try:
                if self.store.settings.get(BASELINE_SETTING) is None:
                    self.backfill()  # records the baseline, unless the order book could not be read
                self._baselined = self.store.settings.get(BASELINE_SETTING) is not None
            except StorageDown:
                return False
        return self._baselined

    def _recover_dropped(self) -> None:
        """The stream dropped updates this shard never read (it was away longer than the stream keeps
        them): the leader's order book has what is still open, as after a socket reconnect."""
        log.warning("%s: the stream no longer holds updates this shard had not read; reading the leader's "
                    "order book instead", self.durable)
        try:
            self.backfill()
        except StorageDown:  # caught up once storage is back, like a socket's missed updates
            self._missed = True

    def _on_delivered(self, delivered: StreamDelivered) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if not self._baseline():  # the order book could not be read: nothing is applied before it
            for delivery in delivered.deliveries:
                consumer.nak(delivery, REDELIVER_AFTER)
            return
        if self._missed and self.store.healthy:
            self._catch_up_after_outage()
        for delivery in delivered.deliveries:
            try:
                update, received_at_ns = decode_update(delivery.data)
            except BadStreamMessage as exc:
                metrics.MALFORMED_MESSAGES.labels(self.role, exc.reason).inc()
                metrics.STREAM_RECEIVED.labels("unreadable").inc()
                log.warning("%s: dropped an unreadable stream message (sequence %d): %s", self.durable,
                            delivery.stream_seq, exc)
                consumer.ack(delivery)
                continue
            # its age on this machine: received on the feed's, `received_at_ns` ago
            age_ns = max(0, time.time_ns() - received_at_ns)
            update = dataclasses.replace(update, received_ns=time.monotonic_ns() - age_ns)
            try:
                stored = store_and_route(self.store, self.router, self.account, update)
            except StorageDown:  # not stored, so not acknowledged: it comes again
                self._missed = True
                self._unstored[update.order_id] = update
                metrics.STREAM_RECEIVED.labels("retried").inc()
                consumer.nak(delivery, REDELIVER_AFTER)
                continue
            metrics.STREAM_RECEIVED.labels("stored" if stored else "duplicate").inc()
            consumer.ack(delivery)
