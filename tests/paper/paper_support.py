"""Helpers for the paper exchange tests: exchange factory, dhanhq clients, an order-update feed."""
from __future__ import annotations

import json
import threading
from typing import Any, Callable

import websocket
from dhanhq import DhanContext, dhanhq

from paper import AccountSpec, PaperExchange

LEADER, LEADER_TOKEN = "1000000001", "tok-leader"
FOLLOWER, FOLLOWER_TOKEN = "1000000002", "tok-follower"
RELIANCE, TCS = "2885", "11536"
NIFTY_CE = "45105"   # NIFTY 01 DEC 24000 CALL, lot 75
UNLIMITED = {"per_second": None, "per_minute": None, "per_hour": None, "per_day": None}


def make_exchange(**kw: Any) -> PaperExchange:
    opts: dict[str, Any] = {"price_walk": False, "tick_seconds": 0.02, "rate_limits": UNLIMITED}
    opts.update(kw)
    ex = PaperExchange(**opts).start()
    ex.add_account(AccountSpec(LEADER, LEADER_TOKEN, funds=1_000_000.0))
    ex.add_account(AccountSpec(FOLLOWER, FOLLOWER_TOKEN, funds=1_000_000.0))
    return ex


def client(ex: PaperExchange, client_id: str = LEADER, token: str = LEADER_TOKEN) -> dhanhq:
    ctx = DhanContext(client_id, token)
    ctx.get_dhan_http().base_url = ex.rest_url
    ctx.get_dhan_http().timeout = 5
    return dhanhq(ctx)


def buy(d: dhanhq, qty: int = 10, sid: str = RELIANCE, order_type: str = "MARKET", price: float = 0.0,
        **kw: Any) -> dict[str, Any]:
    seg = "NSE_FNO" if sid.startswith("4") and len(sid) == 5 else "NSE_EQ"
    return d.place_order(sid, seg, kw.pop("side", "BUY"), qty, order_type, kw.pop("product", "INTRADAY"), price, **kw)


def order_id(answer: dict[str, Any]) -> str:
    assert answer["status"] == "success", answer
    return answer["data"]["orderId"]


class Feed:
    """An order-update socket client: logs in like Dhan's, collects every message."""

    def __init__(self, ex: PaperExchange, client_id: str = LEADER, token: str = LEADER_TOKEN) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._cond = threading.Condition()
        self.ws = websocket.create_connection(ex.ws_url, timeout=5)
        self.ws.send(json.dumps({"LoginReq": {"MsgCode": 42, "ClientId": client_id, "Token": token},
                                 "UserType": "SELF"}))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                text = self.ws.recv()
                if not text:
                    break
                with self._cond:
                    self.messages.append(json.loads(text))
                    self._cond.notify_all()
        except Exception:
            pass
        finally:
            self.closed.set()
            with self._cond:
                self._cond.notify_all()

    def alerts(self, order_no: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [m["Data"] for m in self.messages
                    if m.get("Type") == "order_alert" and (order_no is None or m["Data"]["OrderNo"] == order_no)]

    def wait(self, predicate: Callable[["Feed"], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def close(self) -> None:
        self.ws.close()

