"""The DhanHQ v2 REST surface under /v2: auth, fault injection, rate limits, then the engine.

Every answer is JSON in Dhan's shapes; every refusal is the contract's error body. No
exception escapes as a 500 page: unexpected ones become DH-908 and are logged."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from typing import Any, Callable

from aiohttp import web

from .book import Account, margin_required
from .engine import Engine
from .errors import DhanError, input_error
from .faults import Faults
from .ratelimit import RateLimiter
from .requestlog import RequestLog
from .validation import (check_client, parse_forever, parse_forever_modify, parse_json, parse_leg_name, parse_margin,
                         parse_modify, parse_place, parse_quote_request, parse_super, parse_super_modify)

log = logging.getLogger("paper.rest")
PREFIX = "/v2"

Result = tuple[int, Any]
Handler = Callable[[Account, web.Request, bytes], Result]


def _json(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json")


class RestApi:
    def __init__(self, engine: Engine, faults: Faults, limiter: RateLimiter, requests: RequestLog,
                 quote_limiter: RateLimiter | None = None) -> None:
        self.engine = engine
        self.faults = faults
        self.limiter = limiter
        self.requests = requests
        self.quote_limiter = quote_limiter   # Dhan limits market quote APIs apart from order APIs

    def add_routes(self, app: web.Application) -> None:
        r: list[tuple[str, str, Handler, bool]] = [
            ("POST", "/orders", self.place, True),
            ("POST", "/orders/slicing", self.place_sliced, True),
            ("GET", "/orders", self.order_book, False),
            ("GET", "/orders/external/{correlationId}", self.by_correlation, False),
            ("GET", "/orders/{orderId}", self.one_order, False),
            ("PUT", "/orders/{orderId}", self.modify, True),
            ("DELETE", "/orders/{orderId}", self.cancel, True),
            ("GET", "/trades", self.trades, False),
            ("GET", "/trades/", self.trades, False),
            ("GET", "/trades/{orderId}", self.trades, False),
            ("GET", "/trades/{fromDate}/{toDate}/{page}", self.trades, False),
            ("GET", "/positions", self.positions, False),
            ("GET", "/holdings", self.holdings, False),
            ("GET", "/fundlimit", self.funds, False),
            ("POST", "/margincalculator", self.margin, False),
            ("POST", "/killswitch", self.kill_switch, False),
            ("GET", "/killswitch", self.kill_switch_status, False),
            ("POST", "/forever/orders", self.forever_place, True),
            ("PUT", "/forever/orders/{orderId}", self.forever_modify, True),
            ("DELETE", "/forever/orders/{orderId}", self.forever_cancel, True),
            ("GET", "/forever/orders", self.forever_list, False),
            ("GET", "/forever/all", self.forever_list, False),
            ("POST", "/super/orders", self.super_place, True),
            ("PUT", "/super/orders/{orderId}", self.super_modify, True),
            ("DELETE", "/super/orders/{orderId}/{orderLeg}", self.super_cancel, True),
            ("GET", "/super/orders", self.super_list, False),
            ("GET", "/RenewToken", self.renew_token, False),
            ("GET", "/profile", self.profile, False),
            ("POST", "/marketfeed/ltp", self.ltp, False),
        ]
        for method, path, fn, order_api in r:
            app.router.add_route(method, PREFIX + path, self._wrap(f"{method} {path}", fn, order_api))
        app.router.add_route("*", PREFIX + "/{tail:.*}", self._wrap("* unknown", self.unknown, False))

    def _wrap(self, route: str, fn: Handler, order_api: bool) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._run(request, route, fn, order_api)
        return handler

    async def _run(self, request: web.Request, route: str, fn: Handler, order_api: bool) -> web.StreamResponse:
        arrived = time.time()
        cid = request.headers.get("client-id")
        rel = request.path[len(PREFIX):] or "/"
        keys = (f"{request.method} {rel}", route)
        acct: Account | None = None
        code: str | None = None
        error: str | None = None
        try:
            acct = self.engine.authenticate(cid, request.headers.get("access-token"))
            if acct is None:
                raise DhanError("DH-901", "Client ID or access token is invalid or expired")
            mode = self.faults.before_effect(cid, keys)
            if mode == "close":
                self.requests.add(cid, request.method, rel, route, 0, "close")
                return self._abort(request)
            if mode:
                raise DhanError(mode, "injected fault: the broker could not process the request")
            slow = self.faults.effect_delay(cid, keys)
            if slow > 0:
                await asyncio.sleep(slow)
            if order_api and not self.limiter.allow(acct.client_id):
                raise DhanError("DH-904", "Too many requests: order API rate limit exceeded, retry later")
            raw = await request.read()
            status, payload = fn(acct, request, raw)
        except DhanError as e:
            status, payload, code, error = e.http_status, e.body(), e.code, e.message
        except Exception:   # a bug here must still answer in the contract's shape
            log.exception("unexpected error in %s", route)
            err = DhanError("DH-908", "internal server error")
            status, payload, code = err.http_status, err.body(), err.code
        if acct is not None and code is None and self.faults.lose_answer(cid, keys):
            self.requests.add(cid, request.method, rel, route, 0, "close")
            return self._abort(request)
        delay = self.faults.answer_delay(cid, keys) if acct is not None else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        order_id = payload.get("orderId") if status == 200 and isinstance(payload, dict) else None
        self.requests.add(cid, request.method, rel, route, status, code, arrived, order_id, error)
        return _json(status, payload)

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer: the client sees a transport error."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)   # never reaches the client: the transport is gone

    # --- orders ---
    def place(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        check_client(body, acct.client_id)
        order, status = self.engine.place(acct.client_id, parse_place(body, self.engine.instruments))
        return 200, {"orderId": order.order_id, "orderStatus": status}

    def place_sliced(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        """Dhan's order slicing: the order cut into slices within the freeze quantity, answered as
        the list of the slices' `{orderId, orderStatus}` in placement order."""
        body = parse_json(raw)
        check_client(body, acct.client_id)
        placed = self.engine.place_sliced(acct.client_id, parse_place(body, self.engine.instruments))
        return 200, [{"orderId": order.order_id, "orderStatus": status} for order, status in placed]

    def order_book(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        with self.engine.lock:
            return 200, [o.as_rest() for o in acct.book()]

    def one_order(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        oid = request.match_info["orderId"]
        with self.engine.lock:
            order = acct.orders.get(oid)
            if order is None:
                raise input_error("orderId", f"no order {oid[:30]!r} for this client")
            return 200, order.as_rest()

    def by_correlation(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        corr = request.match_info["correlationId"]
        with self.engine.lock:
            order = acct.by_correlation.get(corr)
            if order is None:
                raise input_error("correlationId", f"no order with correlationId {corr[:30]!r}")
            slices = acct.sliced.get(corr)
            if slices:   # the slices of one sliced placement share its correlation id: all of them answer
                return 200, [o.as_rest() for o in slices]
            return 200, order.as_rest()

    def modify(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        check_client(body, acct.client_id)
        oid = request.match_info["orderId"]
        if body.get("orderId") not in (None, "", oid):
            raise input_error("orderId", "body orderId does not match the path")
        order = self.engine.modify(acct.client_id, oid, lambda o: parse_modify(body, o.order_type, o.validity))
        return 200, {"orderId": order.order_id, "orderStatus": order.status}

    def cancel(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        order = self.engine.cancel(acct.client_id, request.match_info["orderId"])
        return 200, {"orderId": order.order_id, "orderStatus": order.status}

    # --- portfolio ---
    def trades(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        oid = request.match_info.get("orderId")
        with self.engine.lock:
            return 200, [t.as_rest() for t in acct.trades if oid is None or t.order_id == oid]

    def positions(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        with self.engine.lock:
            return 200, [p.as_rest(acct.client_id, self.engine.ltp(sid)) for (sid, _), p in acct.positions.items()]

    def holdings(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        return 200, []

    def funds(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        with self.engine.lock:
            return 200, acct.funds_rest()

    def margin(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        ins, txn, product, qty, price = parse_margin(body, self.engine.instruments)
        with self.engine.lock:
            price = price or self.engine.ltp(ins.security_id)
            need = round(margin_required(ins, txn, product, qty, price), 2)
            avail = acct.available()
        return 200, {"totalMargin": need, "spanMargin": 0.0 if ins.is_equity else round(need * 0.7, 2),
                     "exposureMargin": 0.0 if ins.is_equity else round(need * 0.3, 2), "availableBalance": avail,
                     "variableMargin": need if ins.is_equity else 0.0,
                     "insufficientBalance": round(max(0.0, need - avail), 2), "brokerage": 20.0,
                     "leverage": f"{round(qty * price / need, 2) if need else 1.0}"}

    def kill_switch(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        action = (request.query.get("killSwitchStatus") or "").upper()
        if action not in ("ACTIVATE", "DEACTIVATE"):
            raise input_error("killSwitchStatus", "must be ACTIVATE or DEACTIVATE")
        with self.engine.lock:
            acct.kill_switch = action == "ACTIVATE"
        word = "activated" if acct.kill_switch else "deactivated"
        return 200, {"dhanClientId": acct.client_id, "killSwitchStatus": f"Kill Switch has been successfully {word}"}

    def kill_switch_status(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        return 200, {"dhanClientId": acct.client_id, "killSwitchStatus": "ACTIVATE" if acct.kill_switch else "DEACTIVATE"}

    # --- forever orders ---
    def forever_place(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        check_client(body, acct.client_id)
        rec = self.engine.place_forever(acct.client_id, parse_forever(body, self.engine.instruments))
        return 200, {"orderId": rec["orderId"], "orderStatus": rec["orderStatus"]}

    def forever_modify(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        check_client(body, acct.client_id)
        rec = self.engine.modify_forever(acct.client_id, request.match_info["orderId"], parse_forever_modify(body))
        return 200, {"orderId": rec["orderId"], "orderStatus": rec["orderStatus"]}

    def forever_cancel(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        rec = self.engine.cancel_forever(acct.client_id, request.match_info["orderId"])
        return 200, {"orderId": rec["orderId"], "orderStatus": rec["orderStatus"]}

    def forever_list(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        with self.engine.lock:
            return 200, [dict(r) for r in acct.forever.values()]

    # --- super orders ---
    def super_place(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        check_client(body, acct.client_id)
        so, status = self.engine.supers.place(acct.client_id, parse_super(body, self.engine.instruments))
        return 200, {"orderId": so.order_id, "orderStatus": status}

    def super_modify(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        body = parse_json(raw)
        check_client(body, acct.client_id)
        oid = request.match_info["orderId"]
        if body.get("orderId") not in (None, "", oid):
            raise input_error("orderId", "body orderId does not match the path")
        so = self.engine.supers.modify(acct.client_id, oid,
                                       lambda entry: parse_super_modify(body, entry.instrument, entry.order_type))
        return 200, {"orderId": so.order_id, "orderStatus": so.status()}

    def super_cancel(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        leg = parse_leg_name(request.match_info["orderLeg"], "order-leg")
        so = self.engine.supers.cancel(acct.client_id, request.match_info["orderId"], leg)
        return 200, {"orderId": so.order_id, "orderStatus": "CANCELLED"}

    def super_list(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        with self.engine.lock:
            return 200, self.engine.supers.listing(acct)

    def renew_token(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        """Dhan's RenewToken: a new token valid 24 h; the one used to ask expires."""
        token = self.engine.rotate_token(acct.client_id)
        return 200, {"dhanClientId": acct.client_id, "accessToken": token, "expiryTime": "2099-12-31T23:59:59"}

    def profile(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        """Dhan's user profile: token validity, segments, and whether the Data API plan is active."""
        now = self.engine.sessions.now_ist()
        with self.engine.lock:
            plan = acct.data_plan
        return 200, {"dhanClientId": acct.client_id, "tokenValidity": (now + timedelta(days=1)).strftime("%d/%m/%Y %H:%M"),
                     "activeSegment": "Equity, Derivative, Currency, Commodity", "ddpi": "Active", "mtf": "Active",
                     "dataPlan": "Active" if plan else "Deactive",
                     "dataValidity": (now + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S.0") if plan else ""}

    def ltp(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        """Dhan's market quote (LTP): the last price of each instrument asked, from the price walk;
        instruments without data are left out of the answer."""
        if not acct.data_plan:
            raise DhanError("DH-902", "User has not subscribed to Data APIs or does not have access to Trading APIs")
        if self.quote_limiter is not None and not self.quote_limiter.allow(acct.client_id):
            raise DhanError("DH-904", "Too many requests: market quote APIs allow 1 request per second")
        wanted = parse_quote_request(parse_json(raw))
        data: dict[str, dict[str, dict[str, float]]] = {}
        with self.engine.lock:
            for segment, security_id in wanted:
                ins = self.engine.instruments.get(security_id)
                if ins is None or ins.exchange_segment != segment or self.engine.board.quotes[security_id].hidden:
                    continue
                data.setdefault(segment, {})[security_id] = {"last_price": self.engine.ltp(security_id)}
        return 200, {"data": data, "status": "success"}

    def unknown(self, acct: Account, request: web.Request, raw: bytes) -> Result:
        raise DhanError("DH-905", f"path: no such endpoint {request.method} {request.path[:80]}")
