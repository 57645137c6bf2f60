"""Stream messages as bytes: a leader order update (published by the feed process, read by every
shard) and a kill-switch change (published by an operator command or a shard, read by every shard).

JSON, versioned. A leader update carries the wall-clock time the feed process received it: a
shard's monotonic clock cannot read the feed's, and a copy's age (`copy.max_delay_seconds`) and
latency count from that first receipt, on whichever machine it happened.
"""
from __future__ import annotations

import json
from typing import Any

from trading.kill_switch import KillSwitchState
from trading.orders import OrderUpdate, update_from_dict, update_to_dict

VERSION = 1


class BadStreamMessage(ValueError):
    """A stream message this version cannot read; `reason` is a short label for the metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encode_update(update: OrderUpdate, received_at_ns: int) -> bytes:
    """`received_at_ns`: wall clock (time.time_ns) when the feed process received the update."""
    payload = update_to_dict(update)
    payload["received_ns"] = 0  # the feed's monotonic clock means nothing to another process
    return json.dumps({"v": VERSION, "update": payload, "received_at_ns": received_at_ns},
                      separators=(",", ":")).encode()


def decode_update(data: bytes) -> tuple[OrderUpdate, int]:
    """The update and the wall-clock time (ns) the feed process received it."""
    body = _body(data)
    update, received = body.get("update"), body.get("received_at_ns")
    if not isinstance(update, dict) or not isinstance(received, int) or isinstance(received, bool):
        raise BadStreamMessage("bad_shape", "a leader update needs 'update' (an object) and 'received_at_ns'")
    try:
        return update_from_dict(update), received
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadStreamMessage("bad_field", f"not an order update: {exc}") from None


def encode_kill_switch(state: KillSwitchState) -> bytes:
    return json.dumps({"v": VERSION, "kill_switch": json.loads(state.to_json())}, separators=(",", ":")).encode()


def decode_kill_switch(data: bytes) -> KillSwitchState:
    state = _body(data).get("kill_switch")
    if not isinstance(state, dict) or not isinstance(state.get("on"), bool):
        raise BadStreamMessage("bad_shape", "a kill-switch message needs 'kill_switch' with 'on'")
    try:
        return KillSwitchState.from_json(json.dumps(state))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadStreamMessage("bad_field", f"not a kill-switch state: {exc}") from None


def _body(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadStreamMessage("bad_json", str(exc)) from None
    if not isinstance(body, dict):
        raise BadStreamMessage("bad_shape", f"expected an object, got {type(body).__name__}")
    if body.get("v") != VERSION:
        raise BadStreamMessage("bad_version", f"version {body.get('v')!r}; this copier reads version {VERSION}")
    return body
