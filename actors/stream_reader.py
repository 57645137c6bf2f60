"""The thread that reads one durable stream consumer for an actor, as a socket thread reads a socket:
it opens the consumer once the stream server is reachable, fetches, and tells each batch to the
actor (`StreamDelivered`); on a failure it tells `StreamClosed` and opens the consumer again (the
server delivers again whatever was not acknowledged). The actor stores, then acknowledges."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from streams import Delivery, StreamUnavailable
from supervisors import Address

log = logging.getLogger(__name__)

FETCH_BATCH = 256
FETCH_WAIT = 1.0  # seconds a fetch waits for the first delivery (and the most a stop waits for the thread)


class Consumer(Protocol):
    missed: bool  # the stream dropped messages this reader had not acknowledged (see JetStream.consumer)

    def fetch(self, batch: int, timeout: float) -> list[Delivery]: ...
    def ack(self, delivery: Delivery) -> None: ...
    def nak(self, delivery: Delivery, delay: float) -> None: ...
    def close(self) -> None: ...


class Stream(Protocol):
    connected: threading.Event

    def consumer(self, durable: str, subject: str, *, fresh: bool, start: str = "all") -> Consumer: ...


@dataclass(frozen=True)
class StreamOpened:
    """The reader opened its consumer (`conn`-th time); deliveries that follow come through it."""

    conn: int
    consumer: Any  # Consumer


@dataclass(frozen=True)
class StreamDelivered:
    conn: int
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True)
class StreamClosed:
    reason: str


class StreamReader:
    def __init__(self, stream: Stream, durable: str, subject: str, actor: Address, *,
                 fresh: Callable[[], bool] = lambda: False, start: str = "all") -> None:
        """`fresh()`, asked before the first open: the actor's storage is new (see JetStream.consumer)."""
        self.stream, self.durable, self.subject, self.actor = stream, durable, subject, actor
        self.fresh, self.start_at = fresh, start
        self.halt = threading.Event()
        self.conn = 0
        self._thread = threading.Thread(target=self._run, name=f"stream-{durable}", daemon=True)

    def start(self) -> "StreamReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.halt.set()

    def _run(self) -> None:
        fresh = self.fresh()
        while not self.halt.is_set():
            if not self.stream.connected.wait(FETCH_WAIT):
                continue
            try:
                consumer = self.stream.consumer(self.durable, self.subject, fresh=fresh, start=self.start_at)
            except StreamUnavailable as exc:
                log.info("%s: stream consumer not ready: %s", self.durable, exc)
                self.halt.wait(FETCH_WAIT)
                continue
            fresh = False
            self.conn += 1
            self.actor.tell(StreamOpened(self.conn, consumer))
            try:
                while not self.halt.is_set():
                    deliveries = consumer.fetch(FETCH_BATCH, FETCH_WAIT)
                    if deliveries:
                        self.actor.tell(StreamDelivered(self.conn, tuple(deliveries)))
            except StreamUnavailable as exc:
                self.actor.tell(StreamClosed(str(exc)))
                self.halt.wait(FETCH_WAIT / 2)
            except Exception as exc:  # noqa: BLE001 - never let the thread die: log, open the consumer again
                log.warning("%s: reading the stream failed: %s", self.durable, exc)
                self.actor.tell(StreamClosed(str(exc)))
                self.halt.wait(FETCH_WAIT)
            consumer.close()
