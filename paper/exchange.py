"""PaperExchange: runs the REST server and the order-update socket in one event loop on a
background thread, a ticker thread for prices and matching, and the control API tests use."""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from aiohttp import web

from . import realtime
from .alerts import order_alert
from .book import Account
from .control import add_control_routes, is_loopback
from .engine import Engine
from .faults import Faults
from .freeze import FreezeLimits
from .instruments import load_instruments
from .matching import PriceBoard, round_tick
from .ratelimit import RateLimiter
from .requestlog import RequestLog
from .rest import RestApi
from .sessions import SessionClock
from .socket import OrderSocketHub

log = logging.getLogger("paper")

_CONTROL_CALLS = ("set_price", "set_session", "set_circuit", "halt", "fill", "reject_next", "set_funds",
                  "price", "orders", "positions", "trades", "funds", "request_log", "modification_count",
                  "set_data_plan", "hold_fills", "hide_quote", "rate_limit_exempt", "send_raw", "socket_count",
                  "super_orders", "freeze_limit", "set_freeze_limit", "socket_logins")
_FAULT_CALLS = ("drop_sockets", "refuse_reconnects", "delay_answers", "fail_fraction", "fail_after_effect",
                "duplicate_messages", "reorder_messages", "clear", "counts", "ignore_pings", "stall_sockets",
                "delay_messages")


@dataclass
class AccountSpec:
    client_id: str
    access_token: str
    funds: float = 1_000_000.0


class PaperExchange:
    def __init__(self, seed: int = 7, price_walk: bool = True, tick_seconds: float = 0.2, session: str = "open",
                 clock: Callable[[], datetime] | None = None, rate_limits: dict[str, int | None] | None = None,
                 fill_tranche_qty: int | None = None, host: str = "127.0.0.1", port: int = 0,
                 instruments_csv: str | Path | None = None, ws_port: int = 0,
                 quotes_per_second: int | None = 1, sequence: bool = True, control_token: str | None = None,
                 freeze_limits: str | Path | Mapping[str, int | None] | FreezeLimits | None = None) -> None:
        """`sequence=False` leaves the per-order `Sequence` out of the order-update frames, as Dhan's
        own feed does. `freeze_limits`: a freeze quantity table (CSV), or underlying -> units for
        the F&O segments, instead of the shipped table (paper/data/freeze_limits.csv)."""
        if control_token is None and not is_loopback(host):
            raise ValueError(f"a paper exchange on {host} (beyond loopback) needs a control token")
        self.control_token = control_token
        self.price_walk = price_walk
        self.tick_seconds = tick_seconds
        self.host, self._port, self._ws_port = host, port, ws_port
        self.instruments = load_instruments(instruments_csv)
        self.faults = Faults(on_drop=lambda: self.hub.drop_all(), seed=seed,
                             on_stall=lambda client_id: self.hub.stall(client_id))
        self.hub = OrderSocketHub(lambda c, t: self.engine.authenticate(c, t) is not None, self.faults)
        self.engine = Engine(self.instruments, PriceBoard(self.instruments, seed), SessionClock(session, clock),
                             self.hub.publish, fill_tranche_qty, sequence,
                             freeze_limits if isinstance(freeze_limits, FreezeLimits) else FreezeLimits(freeze_limits))
        self.limiter = RateLimiter(rate_limits)
        self.quote_limiter = RateLimiter({"per_second": quotes_per_second, "per_minute": None, "per_hour": None,
                                          "per_day": None})
        self.requests = RequestLog()
        self.rest_url = self.ws_url = self.control_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runners: list[web.AppRunner] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._stopped = False

    # --- lifecycle ---
    def start(self) -> "PaperExchange":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run_loop() -> None:
            loop = self._loop = realtime.RealTimeLoop()
            asyncio.set_event_loop(loop)
            self.hub.loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:   # surface bind errors to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        t = threading.Thread(target=run_loop, name="paper-exchange-loop", daemon=True)
        t.start()
        ready.wait(10)
        if failure:
            raise RuntimeError(f"paper exchange failed to start: {failure[0]}") from failure[0]
        ticker = threading.Thread(target=self._tick_loop, name="paper-exchange-ticker", daemon=True)
        ticker.start()
        self._threads = [t, ticker]
        return self

    def _control_calls(self) -> dict[str, Callable[..., Any]]:
        """What a driver in another process may call on the control endpoint, by name."""
        calls: dict[str, Callable[..., Any]] = {name: getattr(self, name) for name in _CONTROL_CALLS}
        calls.update({f"faults.{name}": getattr(self.faults, name) for name in _FAULT_CALLS})
        calls["add_account"] = lambda **kw: self.add_account(AccountSpec(**kw)) and None
        return calls

    def _control_state(self) -> dict[str, Any]:
        return {"rest_url": self.rest_url, "ws_url": self.ws_url, "session": self.engine.sessions.state(),
                "accounts": sorted(self.engine.accounts), "sockets": self.socket_count()}

    async def _serve(self) -> None:
        rest_app = web.Application(client_max_size=64 * 1024)
        RestApi(self.engine, self.faults, self.limiter, self.requests, self.quote_limiter).add_routes(rest_app)
        add_control_routes(rest_app, self._control_calls(), self._control_state, self.control_token)
        ws_app = web.Application()
        ws_app.router.add_get("/", self.hub.handle)
        ports = []
        for app, port in ((rest_app, self._port), (ws_app, self._ws_port)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, port)
            await site.start()
            self._runners.append(runner)
            ports.append(runner.addresses[0][1])
        self.rest_url = f"http://{self.host}:{ports[0]}/v2"
        self.control_url = f"http://{self.host}:{ports[0]}/control"
        self.ws_url = f"ws://{self.host}:{ports[1]}"

    def _tick_loop(self) -> None:
        """Period work off the event loop; sleeps on an Event (immune to freezegun) and
        does nothing while there are no open orders and prices do not walk."""
        while not self._stopping.is_set():
            idle = not (self.price_walk or self.engine.busy() or self.engine.sessions.mode == "auto")
            if idle:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._stopping.wait(self.tick_seconds)
            try:
                self.engine.tick(self.price_walk)
            except Exception:
                log.exception("tick failed")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        loop = self._loop
        if loop is not None and loop.is_running():
            async def shutdown() -> None:
                await asyncio.wait_for(self.hub.close_all(), 0.5)
                for r in self._runners:
                    await r.cleanup()
            fut = asyncio.run_coroutine_threadsafe(shutdown(), loop)
            try:
                fut.result(1.5)
            except Exception:
                log.warning("paper exchange shutdown was not clean")
            loop.call_soon_threadsafe(loop.stop)
        for t in self._threads:
            t.join(0.5)

    def __enter__(self) -> "PaperExchange":
        return self.start() if not self._threads else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- accounts and book reads ---
    def add_account(self, spec: AccountSpec) -> Account:
        return self.engine.add_account(spec.client_id, spec.access_token, spec.funds)

    def account(self, client_id: str) -> Account:
        return self.engine.account(client_id)

    def expire_token(self, client_id: str) -> None:
        """The account's token stops working (DH-901 on REST, login refused on the socket)."""
        self.engine.rotate_token(client_id)

    def orders(self, client_id: str) -> list[dict[str, Any]]:
        """The account's order book as `GET /orders` answers it (super orders' exit legs included)."""
        with self.engine.lock:
            return [o.as_rest() for o in self.account(client_id).book()]

    def super_orders(self, client_id: str) -> list[dict[str, Any]]:
        """The account's super orders as `GET /super/orders` answers them (exit legs in `legDetails`)."""
        with self.engine.lock:
            return self.engine.supers.listing(self.account(client_id))

    def order(self, client_id: str, order_id: str) -> dict[str, Any]:
        with self.engine.lock:
            return self.account(client_id).orders[order_id].as_rest()

    def positions(self, client_id: str) -> list[dict[str, Any]]:
        with self.engine.lock:
            acct = self.account(client_id)
            return [p.as_rest(client_id, self.engine.ltp(sid)) for (sid, _), p in acct.positions.items()]

    def trades(self, client_id: str) -> list[dict[str, Any]]:
        with self.engine.lock:
            return [t.as_rest() for t in self.account(client_id).trades]

    def funds(self, client_id: str) -> dict[str, Any]:
        with self.engine.lock:
            return self.account(client_id).funds_rest()

    def set_funds(self, client_id: str, amount: float) -> None:
        with self.engine.lock:
            self.account(client_id).sod_limit = float(amount)

    def forever_orders(self, client_id: str) -> list[dict[str, Any]]:
        with self.engine.lock:
            return [dict(r) for r in self.account(client_id).forever.values()]

    def modification_count(self, client_id: str, order_id: str) -> int:
        with self.engine.lock:
            return self.account(client_id).orders[order_id].modifications

    def rate_limit_exempt(self, client_id: str) -> None:
        self.limiter.exempt(client_id)

    def request_log(self, client_id: str | None = None) -> list[dict[str, Any]]:
        return self.requests.entries(client_id)

    def socket_logins(self, client_id: str) -> list[float]:
        """Monotonic times of the account's socket login attempts (refused ones too): lets tests
        see how often a client retries."""
        return self.hub.login_attempts(client_id)

    def socket_count(self, client_id: str | None = None) -> int:
        """Logged-in order-update sockets (of one account): lets tests wait for a login."""
        return self.hub.connection_count(client_id)

    # --- market control ---
    def price(self, security_id: str) -> float:
        with self.engine.lock:
            return self.engine.ltp(str(security_id))

    def set_price(self, security_id: str, price: float) -> None:
        self.engine.set_price(str(security_id), price)
        self._wake.set()

    def set_session(self, session: str) -> None:
        self.engine.set_session(session)
        self._wake.set()

    def set_circuit(self, security_id: str, lower: float, upper: float) -> None:
        with self.engine.lock:
            tick = self.instruments[str(security_id)].tick_size
            q = self.engine.board.quotes[str(security_id)]
            q.lower, q.upper = round_tick(lower, tick), round_tick(upper, tick)

    def halt(self, security_id: str, halted: bool = True) -> None:
        with self.engine.lock:
            self.engine.board.quotes[str(security_id)].halted = halted
        if not halted:
            self.engine.set_price(str(security_id), self.price(str(security_id)))

    def set_data_plan(self, client_id: str, active: bool) -> None:
        """Whether the account has Dhan's Data API plan (`dataPlan` in /profile); without it the
        market quote API answers DH-902."""
        with self.engine.lock:
            self.account(client_id).data_plan = bool(active)

    def hold_fills(self, security_id: str, held: bool = True) -> None:
        """No counterparty in the instrument: its orders rest unfilled (a forced `fill` still
        trades) until released, when they match at the last price again."""
        with self.engine.lock:
            self.engine.board.quotes[str(security_id)].held = held
        if not held:
            self.engine.set_price(str(security_id), self.price(str(security_id)))

    def hide_quote(self, security_id: str, hidden: bool = True) -> None:
        """The market quote API has no data for the instrument and leaves it out of its answers."""
        with self.engine.lock:
            self.engine.board.quotes[str(security_id)].hidden = hidden

    def fill(self, client_id: str, order_id: str, qty: int | None = None, price: float | None = None,
             leg: str | None = None) -> dict[str, Any]:
        """Trade the order now (`leg`: that leg of a super order, e.g. "TARGET_LEG")."""
        return self.engine.force_fill(client_id, order_id, qty, price, leg).as_rest()

    def freeze_limit(self, security_id: str) -> int | None:
        """The most units one order of the instrument may carry (None: no limit)."""
        with self.engine.lock:
            return self.engine.freeze.limit(self.instruments[str(security_id)])

    def set_freeze_limit(self, underlying: str, qty: int | None, segment: str | None = None) -> None:
        """Limit orders on `underlying` (e.g. "NIFTY", or "*" for every other one of the segment) to
        `qty` units (None: no limit), in `segment` or in both F&O segments."""
        with self.engine.lock:
            self.engine.freeze.set(underlying, qty, segment)

    def reject_next(self, client_id: str, error_code: str = "DH-906", message: str = "order rejected by the broker",
                    count: int = 1) -> None:
        with self.engine.lock:
            self.account(client_id).reject_next.extend([(error_code, message)] * count)

    def send_late_alert(self, client_id: str, order_id: str, **as_it_was: Any) -> None:
        """Fault: announce the order again as it was (`as_it_was`: Order fields such as status,
        quantity, price), stamped with its current update time, as a frame that arrives late would
        be. The order itself does not change."""
        with self.engine.lock:
            order = replace(self.account(client_id).orders[order_id], **as_it_was)
            self.hub.publish(client_id, order_alert(order, self.engine.sequence))

    def send_raw(self, client_id: str, text: str) -> None:
        """Send `text` as-is on the account's order-update sockets (malformed-message injection)."""
        self.hub.publish_raw(client_id, text)

    def wait_for(self, predicate: Callable[["PaperExchange"], bool], timeout: float = 5.0) -> bool:
        """Poll `predicate(self)` until it is true or `timeout` (real) seconds pass."""
        deadline = realtime.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if realtime.monotonic() >= deadline:
                return False
            self._stopping.wait(0.01)
