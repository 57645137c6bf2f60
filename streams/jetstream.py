"""The NATS JetStream client of the feed process, the shards and the operator commands.

nats-py is asyncio; the copier is threads. One event loop runs on a thread of its own, and each
call here blocks its caller until the server confirmed (or `StreamUnavailable`). The connection is
made in the background and kept: while the server is away, calls fail at once (never block an
actor for long), and the client reconnects by itself. The streams are created on first use and kept
on the server's disk (file storage), so a restarted server still holds what it acknowledged, and a
shard that was down reads on from where it acknowledged last. Two streams, because events and
states age differently:

- `name`, the events (the leader's updates): each kept `max_age`, then dropped;
- `name-state`, the states (the kill switch): the last message of each subject, kept until the
  next one replaces it, however old. A shard started on new storage a week after the kill switch
  went on must still start with it on.

A publication carries a message id (`Nats-Msg-Id`: the update's dedupe key): the server drops a
second copy within its duplicate window, so a publisher that retries after a lost confirmation
does not store it twice (a shard would drop it anyway: its inbox dedupes by the same key).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import nats
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import NotFoundError

from streams.base import ConsumerState, Delivery, StreamUnavailable, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")
CONNECT_RETRY_MAX = 5.0  # seconds between attempts to reach a server that is not there
DUPLICATE_WINDOW = 600.0  # seconds the server remembers message ids (a publisher's retries fall inside)
ACK_WAIT = 30.0  # a delivery not acknowledged this long is delivered again
MAX_ACK_PENDING = 4096  # deliveries in flight per consumer: bounds what a slow shard holds unacknowledged


class JetStream:
    """One connection to the stream server, the stream `name` (subjects `name.E` for each of
    `events`) and the stream `name-state` (subjects `name.S` for each of `states`)."""

    def __init__(self, url: str, name: str, *, events: Sequence[str], states: Sequence[str] = (),
                 max_age_seconds: float = 86400.0, client_name: str = "copytrader",
                 on_connected: Callable[[bool], None] = lambda up: None) -> None:
        self.url, self.name, self.max_age_seconds = url, name, max_age_seconds
        self.state_name = f"{name}-state"
        self.events = [self.subject(event) for event in events]
        self.states = [self.subject(state) for state in states]
        self.client_name = client_name
        self.on_connected = on_connected
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stream", daemon=True)
        self._nc: Any = None
        self._js: Any = None
        self._closing = False
        self._last_error = ""
        # Connections made again so far: a consumer made before the latest may be gone with the
        # server's storage, and a pull from a consumer that is gone only ever times out.
        self.reconnections = 0

    def __repr__(self) -> str:
        return f"JetStream({redact_url(self.url)}, {self.name})"

    def subject(self, *parts: str) -> str:
        return ".".join((self.name, *parts))

    # -- connection --------------------------------------------------------------------------------
    def start(self) -> "JetStream":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop)
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    async def _connect(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                self._nc = await nats.connect(
                    self.url, name=self.client_name, connect_timeout=2, allow_reconnect=True,
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, ping_interval=5, max_outstanding_pings=2,
                    error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected)
                self._js = self._nc.jetstream(timeout=5)
                await self._ensure_stream()
            except Exception as exc:  # noqa: BLE001 - any failure to reach or set up: try again
                await self._close_quietly()
                self._note(f"cannot use the stream server at {redact_url(self.url)}: {_text(exc)}; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_RETRY_MAX)
                continue
            log.info("stream server %s: connected, stream %s", redact_url(self.url), self.name)
            self._set_connected(True)
            return

    async def _ensure_stream(self) -> None:
        """Both streams on the server's disk; created when missing (a first start, a server whose
        storage was lost), the events' retention and subjects brought to these when they differ.
        An events stream made before states had a stream of their own took every subject
        (`name.>`): its last state messages move to the states stream."""
        events = api.StreamConfig(name=self.name, subjects=self.events, storage=api.StorageType.FILE,
                                  retention=api.RetentionPolicy.LIMITS, max_age=self.max_age_seconds,
                                  duplicate_window=min(DUPLICATE_WINDOW, self.max_age_seconds),
                                  discard=api.DiscardPolicy.OLD)
        moved: list[Any] = []
        try:
            info = await self._js.stream_info(self.name)
        except NotFoundError:
            await self._js.add_stream(events)
            log.info("stream %s created on %s", self.name, redact_url(self.url))
        else:
            subjects_differ = sorted(info.config.subjects or []) != sorted(self.events)
            if subjects_differ:
                moved = await self._take_states_out()
            if subjects_differ or info.config.max_age != events.max_age:
                await self._js.update_stream(events)
        if not self.states:
            return
        states = api.StreamConfig(name=self.state_name, subjects=self.states, storage=api.StorageType.FILE,
                                  retention=api.RetentionPolicy.LIMITS, max_msgs_per_subject=1,
                                  duplicate_window=DUPLICATE_WINDOW, discard=api.DiscardPolicy.OLD)
        try:
            await self._js.stream_info(self.state_name)
        except NotFoundError:
            await self._js.add_stream(states)
            log.info("stream %s created on %s", self.state_name, redact_url(self.url))
        for message in moved:
            await self._js.publish(message.subject, message.data, headers={"Nats-Msg-Id": f"moved-{message.seq}"})

    async def _take_states_out(self) -> list[Any]:
        """The events stream's last message of each state subject, and its consumers of them gone."""
        moved = []
        for subject in self.states:
            try:
                moved.append(await self._js.get_last_msg(self.name, subject))
            except NotFoundError:
                pass
        for consumer in await self._js.consumers_info(self.name):
            if consumer.config.filter_subject in self.states:
                await self._js.delete_consumer(self.name, consumer.name)
        return moved

    def _holding(self, subject: str) -> str:
        """The stream that holds `subject`."""
        return self.state_name if subject in self.states else self.name

    async def _on_error(self, exc: Exception) -> None:
        self._note(f"stream server {redact_url(self.url)}: {_text(exc)}")

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("stream server %s: disconnected; reconnecting", redact_url(self.url))
        self._set_connected(False)

    async def _on_reconnected(self) -> None:
        try:  # a server that came back without its storage has no stream
            await self._ensure_stream()
        except Exception as exc:  # noqa: BLE001 - the next call finds out again
            self._note(f"stream {self.name}: not usable after reconnecting: {_text(exc)}")
        log.info("stream server %s: reconnected", redact_url(self.url))
        self.reconnections += 1
        self._set_connected(True)

    def _set_connected(self, up: bool) -> None:
        if up:
            self.connected.set()
        else:
            self.connected.clear()
        try:
            self.on_connected(up)
        except Exception:  # noqa: BLE001 - a metric, never the connection's concern
            log.exception("stream connection callback failed")

    def _note(self, text: str) -> None:
        """Log a connection problem once, not once per reconnect attempt."""
        if text != self._last_error:
            self._last_error = text
            log.warning("%s", text)

    async def _close_quietly(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def close(self, timeout: float = 3.0) -> None:
        if self._closing:
            return
        self._closing = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._close_quietly(), self._loop).result(timeout)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._loop.is_running():  # else Python closes it at exit, when its pipe is gone: a traceback
            self._loop.close()
        self.connected.clear()

    # -- blocking calls ----------------------------------------------------------------------------
    def _call(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        if not self.connected.is_set() or self._js is None:
            raise StreamUnavailable(f"not connected to the stream server at {redact_url(self.url)}")
        future = asyncio.run_coroutine_threadsafe(make(), self._loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StreamUnavailable(f"the stream server at {redact_url(self.url)} did not answer within "
                                    f"{timeout:.0f}s") from None
        except (NatsError, asyncio.TimeoutError, OSError) as exc:
            raise StreamUnavailable(f"stream server {redact_url(self.url)}: {_text(exc)}") from None

    def publish(self, subject: str, data: bytes, msg_id: str, timeout: float = 3.0) -> int:
        """Store `data` on the stream; returns its stream sequence once the server confirmed it."""
        async def go() -> int:
            headers = {"Nats-Msg-Id": msg_id}
            try:
                ack = await self._js.publish(subject, data, timeout=timeout, headers=headers)
            except NoRespondersError:  # no stream takes the subject (the server lost it): make it, once
                await self._ensure_stream()
                ack = await self._js.publish(subject, data, timeout=timeout, headers=headers)
            return int(ack.seq)

        return self._call(go, timeout + 1)

    def last(self, subject: str) -> bytes | None:
        """The last message stored on `subject`, or None when there is none."""
        async def go() -> bytes | None:
            try:
                return (await self._js.get_last_msg(self._holding(subject), subject)).data
            except NotFoundError:
                return None

        return self._call(go, 5)

    def consumer(self, durable: str, subject: str, *, fresh: bool, start: str = "all") -> "Consumer":
        """A shard's durable consumer of `subject`, ready to fetch.

        - `fresh` (the shard's storage is new): start after the stream's current end (`start`
          "new"), or at the last message of the subject ("last": a state, like the kill switch),
          whatever a consumer of that name read before;
        - otherwise, a consumer the server still has goes on after its last acknowledged message:
          it is made again from there, so what was delivered to a process that died unacknowledged
          comes at once, not after the acknowledgement timeout;
        - one the server does not have reads the whole stream (`start` "all"; the shard's inbox
          drops what it already stored) or the subject's last message ("last").

        The consumer's `missed` is true when the stream may no longer keep messages this reader had
        not acknowledged: dropped past `max_age` while it was away, or its consumer gone (the server
        lost its storage): the caller recovers them elsewhere."""
        stream = self._holding(subject)

        async def go() -> tuple[Any, bool]:
            info = None
            try:
                info = await self._js.consumer_info(stream, durable)
            except NotFoundError:
                pass
            first_kept = int((await self._js.stream_info(stream)).state.first_seq)
            next_wanted = info.ack_floor.stream_seq + 1 if info is not None and info.ack_floor else 1
            missed = not fresh and (info is None or first_kept > next_wanted)
            policy: dict[str, Any] = {"deliver_policy": api.DeliverPolicy.ALL}
            if fresh:
                policy = {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT if start == "last"
                          else api.DeliverPolicy.NEW}
            elif info is not None:
                policy = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE,
                          "opt_start_seq": max(1, info.ack_floor.stream_seq + 1)}
            elif start == "last":
                policy = {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
            if info is not None:
                await self._js.delete_consumer(stream, durable)
            config = api.ConsumerConfig(durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT,
                                        max_ack_pending=MAX_ACK_PENDING, filter_subject=subject, **policy)
            return await self._js.pull_subscribe(subject, durable=durable, stream=stream, config=config), missed

        reconnections = self.reconnections
        subscription, missed = self._call(go, 10)
        return Consumer(self, durable, subscription, missed, reconnections)

    def consumer_states(self) -> list[ConsumerState]:
        """Every durable consumer of the events stream, as the server sees it."""
        async def go() -> list[ConsumerState]:
            return [ConsumerState(c.name, c.num_pending or 0, c.num_ack_pending or 0, c.num_waiting or 0,
                                  c.ack_floor.stream_seq if c.ack_floor else 0)
                    for c in await self._js.consumers_info(self.name)]

        return self._call(go, 5)

    def last_sequence(self) -> int:
        async def go() -> int:
            return int((await self._js.stream_info(self.name)).state.last_seq)

        return self._call(go, 5)

    def first_sequence(self) -> int:
        """The oldest message the stream still keeps (past `max_age` the server drops them)."""
        async def go() -> int:
            return int((await self._js.stream_info(self.name)).state.first_seq)

        return self._call(go, 5)

    def _soon(self, make: Callable[[], Awaitable[Any]]) -> None:
        """Run `make()` on the loop without waiting; its failure is left to redelivery."""
        async def quietly() -> None:
            try:
                await make()
            except Exception as exc:  # noqa: BLE001 - an acknowledgement lost: the message comes again
                log.debug("stream: %s", _text(exc))

        try:
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(quietly()))
        except RuntimeError:  # the loop is closed: the process is stopping
            pass


class Consumer:
    """A durable pull consumer: `fetch` blocks up to `timeout`, `ack` once the effect is stored."""

    def __init__(self, stream: JetStream, durable: str, subscription: Any, missed: bool = False,
                 reconnections: int = 0) -> None:
        self.stream, self.durable, self._sub, self.missed = stream, durable, subscription, missed
        self._reconnections = reconnections  # the stream's, when this consumer was made

    def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to `batch` deliveries, waiting at most `timeout` for the first; [] when none came.
        Raises StreamUnavailable once the connection was made again since this consumer was: the
        caller makes it again (`JetStream.consumer`), from where it acknowledged last, or anew."""
        if self.stream.reconnections != self._reconnections:
            raise StreamUnavailable(f"{self.durable}: the stream server was reconnected; opening the consumer again")

        async def go() -> list[Delivery]:
            try:
                messages = await self._sub.fetch(batch, timeout=timeout)
            except (NatsTimeout, asyncio.TimeoutError):
                return []
            return [Delivery(m.data, m.metadata.sequence.stream, m.metadata.num_delivered, m) for m in messages]

        return self.stream._call(go, timeout + 5)

    def ack(self, delivery: Delivery) -> None:
        """Tell the server the delivery's effect is stored. Not waited for: one lost is delivered again,
        and the shard's inbox drops it as a duplicate."""
        self.stream._soon(lambda: delivery.handle.ack())

    def nak(self, delivery: Delivery, delay: float) -> None:
        """Not stored (storage is down): deliver it again after `delay` seconds."""
        self.stream._soon(lambda: delivery.handle.nak(delay=delay))

    def close(self) -> None:
        self.stream._soon(lambda: self._sub.unsubscribe())


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
