"""Raw order-update frames for tests: push any text to the leader's or a follower's socket.

    frames = FrameInjector.for_rig(rig)                    # in-process paper exchange
    frames = FrameInjector.for_control(control, accounts)  # `python -m paper` in its own process
    frames.send("leader", "{not json")                     # any text, as-is
    frames.send("f1", frames.order_alert("f1", Quantity="inf"))  # a valid frame with fields overridden
    for kind, (text, reason) in bad_frames(frames.order_alert("leader")).items(): ...

`order_alert(account, **fields)` is a well-formed `order_alert` of that account (every field the
copier reads, in Dhan's socket spelling, the way the paper exchange sends them) with `fields`
replacing or adding `Data` entries; a field given as `DROP` is left out. Values are written as
Python's json writes them, so `float("nan")` becomes the non-standard literal `NaN`.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from actors.messages import LEADER

DROP = object()  # order_alert(..., Field=DROP) leaves the field out
MIB = 1024 * 1024
_order_numbers = itertools.count(1)


def alert_data(client_id: str, **fields: Any) -> dict[str, Any]:
    """The `Data` of a valid order_alert: a fresh PENDING limit buy of 10 RELIANCE on NSE."""
    number = next(_order_numbers)
    data: dict[str, Any] = {
        "Exchange": "NSE", "Segment": "E", "Source": "P", "SecurityId": "2885", "ClientId": client_id,
        "ExchOrderNo": f"10000000{number:06d}", "OrderNo": f"99000000{number:06d}", "Product": "I",
        "TxnType": "B", "OrderType": "LMT", "Validity": "DAY", "DiscQuantity": 0, "DiscQtyRem": 0,
        "RemainingQuantity": 10, "Quantity": 10, "TradedQty": 0, "Price": 1400.0, "TriggerPrice": 0.0,
        "TradedPrice": 0.0, "AvgTradedPrice": 0.0, "OffMktFlag": "0", "OrderDateTime": "2025-01-02 10:00:00",
        "LastUpdatedTime": "2025-01-02 10:00:00", "ReasonDescription": "CONFIRMED", "Symbol": "RELIANCE",
        "Status": "Pending", "LotSize": 1, "CorrelationId": "", "Sequence": 1,
    }
    for name, value in fields.items():
        if value is DROP:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def order_alert_text(client_id: str, **fields: Any) -> str:
    return json.dumps({"Type": "order_alert", "Data": alert_data(client_id, **fields)})


def bad_frames(valid: str, max_frame_bytes: int = MIB) -> dict[str, tuple[str, str]]:
    """The six kinds of bad frame, built around the valid order_alert `valid`:
    kind -> (frame text, the reason the copier must count it under)."""
    data = json.loads(valid)["Data"]

    def alert(**fields: Any) -> str:
        return json.dumps({"Type": "order_alert", "Data": {**data, **fields}})

    depth = 200_000
    return {
        "inf_quantity": (alert(Quantity="inf"), "not_finite"),
        "deep_nesting": ('{"Type": "order_alert", "Data": ' + "[" * depth + "]" * depth + "}", "too_deep"),
        "nan_price": (alert(Price=float("nan")), "not_finite"),
        "huge_quantity": (alert(Quantity=1e30), "out_of_range"),
        "oversized": (alert(Remarks="x" * (max_frame_bytes + 1)), "too_large"),
        "wrong_types": (alert(Quantity=[10], Price={"value": 1400}, Status=True), "bad_type"),
    }


@dataclass
class FrameInjector:
    """Sends raw frames on the order-update socket of an account, named as the copier names it
    ("leader" or a follower's name). `send_raw(client_id, text)` does the sending."""

    send_raw: Callable[[str, str], None]
    client_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_rig(cls, rig: Any) -> "FrameInjector":
        """The rig's in-process paper exchange (`PaperExchange.send_raw`)."""
        ids = {LEADER: rig.config.leader.client_id, **rig.follower_ids}
        return cls(rig.exchange.send_raw, ids)

    @classmethod
    def for_control(cls, control: Callable[..., Any], client_ids: dict[str, str]) -> "FrameInjector":
        """A paper exchange in another process, through its control endpoint (`send_raw`)."""
        return cls(lambda client_id, text: control("send_raw", client_id=client_id, text=text), client_ids)

    def send(self, account: str, text: str) -> None:
        self.send_raw(self.client_ids[account], text)

    def order_alert(self, account: str, **fields: Any) -> str:
        """A valid order_alert frame of `account`'s client id, with `fields` overridden."""
        return order_alert_text(self.client_ids[account], **fields)
