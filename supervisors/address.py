"""Stable actor addresses.

Pykka drops an actor's inbox when it crashes, and a restarted actor has a new `ActorRef`.
Senders hold an `Address` instead: while the actor is down, `tell` parks messages on the address,
and the supervisor delivers them to the new incarnation, so nothing sent during a restart is lost.
(Messages that were already in the crashed actor's inbox are gone; durable state in storage, not
the inbox, is what makes that safe.)

    sizing = Address("sizing")          # made before the actor, handed to whoever will send to it
    sizing.tell(RefreshAccounts())      # parked: nothing is bound yet
    sizing.bind(SizingActor.start(sizing, top, ...))   # what was parked is delivered, in order
    sizing.ask(FreeCapital())           # asks are not parked: ActorDeadError while it restarts
"""
from __future__ import annotations

import threading
from typing import Any

import pykka


class Address:
    """A stable name for one actor across its restarts. Thread-safe."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ref: pykka.ActorRef | None = None
        self._parked: list[Any] = []
        self._lock = threading.Lock()

    def bind(self, ref: pykka.ActorRef | None) -> None:
        """Point the address at a (new) actor, delivering what was parked meanwhile, in order.

        The parked messages are handed to the new actor under the lock, before the new ref is
        visible to senders: a message told while the address is being bound can never overtake
        one parked before it. (Pykka's `tell` only enqueues, so holding the lock is cheap.)"""
        with self._lock:
            self._ref = ref
            if ref is None:
                return
            parked, self._parked = self._parked, []
            for i, message in enumerate(parked):
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:  # died already: keep the rest parked, in order
                    self._parked = parked[i:]
                    return

    @property
    def ref(self) -> pykka.ActorRef | None:
        return self._ref

    def tell(self, message: Any, inline: bool = False) -> None:
        """`inline`: hand the actor's turn to this thread, when the actor runs on a pool and this
        thread is in a pooled actor's handler (supervisors/pool.py); else an ordinary tell."""
        with self._lock:
            ref = self._ref
            if ref is None:
                self._parked.append(message)
                return
        try:
            if inline and getattr(ref, "hands_off", False):
                ref.tell(message, inline=True)
            else:
                ref.tell(message)
        except pykka.ActorDeadError:
            with self._lock:
                if self._ref is ref:
                    self._parked.append(message)
                    return
            self.tell(message, inline)  # rebound meanwhile: deliver to the new incarnation

    def ask(self, message: Any, timeout: float = 5.0) -> Any:
        ref = self._ref
        if ref is None:
            raise pykka.ActorDeadError(f"{self.name} is restarting")
        return ref.ask(message, timeout=timeout)

    def mailbox_depth(self) -> int:
        ref = self._ref
        return ref.actor_inbox.qsize() if ref is not None else 0

    def __repr__(self) -> str:
        return f"Address({self.name})"
