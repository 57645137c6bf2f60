"""A follower shard's end of the stream's control subject: the kill switch reaches every shard.

An operator's `kill-switch on|off` (from any machine) publishes the change on the control subject,
and so does a shard that turns its own switch on (a risk rule, repeated broker failures:
`PublishKillSwitch` from its kill-switch actor). Every shard reads the subject with a durable
consumer, writes each change into its own storage, where its kill-switch actor finds it within
half a second as it finds an operator command's, and then acknowledges it. A shard that was down
reads what it missed when it starts again; a new one starts with the subject's last message, the
switch as it stands, however old (states have a stream of their own that keeps the last of each:
streams/jetstream.py). A stream server that lost its storage is told the switch again by the shards
that have it on.

An 'on' is always applied (the safe direction). An 'off' is applied only when it is newer than
the state it would end, so an old 'off' delivered again never ends a later 'on'.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

from actors.messages import PublishKillSwitch
from actors.stream_reader import Consumer, Stream, StreamClosed, StreamDelivered, StreamOpened, StreamReader
from observability import metrics
from storage import Store, StorageDown
from streams import StreamUnavailable
from streams.wire import BadStreamMessage, decode_kill_switch, encode_kill_switch
from supervisors import Address, Supervised, Timers
from trading.kill_switch import KillSwitchState

log = logging.getLogger(__name__)

REDELIVER_AFTER = 1.0


class ControlStream(Stream, Protocol):
    def publish(self, subject: str, data: bytes, msg_id: str, timeout: float = 3.0) -> int: ...
    def last(self, subject: str) -> bytes | None: ...


def kill_switch_message_id(state: KillSwitchState) -> str:
    return f"kill-switch-{'on' if state.on else 'off'}-{state.at:.6f}"


class StreamControl(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, *, store: Store, stream: ControlStream,
                 durable: str, subject: str, timers: Timers, shard: str, retry_seconds: float = 1.0) -> None:
        super().__init__(address, supervisor)
        self.store, self.stream, self.durable, self.subject = store, stream, durable, subject
        self.timers, self.shard, self.retry_seconds = timers, shard, retry_seconds
        self._consumer: Consumer | None = None
        self._reader: StreamReader | None = None

    def __repr__(self) -> str:
        return f"StreamControl({self.durable})"

    def started(self) -> None:
        self._reader = StreamReader(self.stream, self.durable, self.subject, self.address, start="last").start()

    def on_stop(self) -> None:
        super().on_stop()
        if self._reader is not None:
            self._reader.stop()

    def on_failure(self, *exc_info: Any) -> None:
        if self._reader is not None:
            self._reader.stop()
        super().on_failure(*exc_info)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StreamOpened):
            self._consumer = message.consumer
            self._tell_again_if_lost()
        elif isinstance(message, StreamDelivered):
            self._apply(message)
        elif isinstance(message, StreamClosed):
            self._consumer = None
        elif isinstance(message, PublishKillSwitch):
            self._publish(message)
        return None

    def _apply(self, delivered: StreamDelivered) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for delivery in delivered.deliveries:
            try:
                state = decode_kill_switch(delivery.data)
            except BadStreamMessage as exc:
                metrics.MALFORMED_MESSAGES.labels("control", exc.reason).inc()
                log.warning("%s: dropped an unreadable control message (sequence %d): %s", self.durable,
                            delivery.stream_seq, exc)
                consumer.ack(delivery)
                continue
            try:
                current = self.store.settings.kill_switch()
                if state.on != current.on and (state.on or state.at > current.at):
                    self.store.settings.set_kill_switch(state.on, state.reason, state.by, at=state.at)
                    log.warning("kill switch turned %s on this shard by %s: %s", "ON" if state.on else "off",
                                state.by, state.reason)
            except StorageDown:  # not stored, not acknowledged: it comes again
                consumer.nak(delivery, REDELIVER_AFTER)
                continue
            consumer.ack(delivery)

    def _tell_again_if_lost(self) -> None:
        """A stream server that lost its storage knows no kill switch: one this shard has on is
        published again (as it was turned on, so every shard that has it takes it as a repeat), so a
        shard started later starts with it. Nothing is republished while the server holds any
        state, an 'off' included."""
        try:
            current = self.store.settings.kill_switch()
            if current.on and self.stream.last(self.subject) is None:
                log.warning("kill switch: the stream server no longer holds it; shard %s tells it again", self.shard)
                self._publish(PublishKillSwitch(current))
        except (StorageDown, StreamUnavailable) as exc:  # the next time the stream opens asks again
            log.info("kill switch: not checked at the stream server (%s)", exc)

    def _publish(self, message: PublishKillSwitch) -> None:
        state = message.state
        try:
            self.stream.publish(self.subject, encode_kill_switch(state), kill_switch_message_id(state))
        except StreamUnavailable as exc:
            log.warning("kill switch: shard %s turned it on and cannot tell the other shards yet (%s); "
                        "trying again", self.shard, exc)
            self.timers.after(self.retry_seconds, self.address, message, owner=self.actor_ref)
            return
        log.info("kill switch: shard %s's change published to every shard", self.shard)
