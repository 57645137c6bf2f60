"""LeaderBot: a leader account that trades like a person, through the real dhanhq client, so
demos and soak tests have realistic activity to copy (entries, stops, modifies, cancels,
partial exits, index options in whole lots, mixed products, the odd IOC)."""
from __future__ import annotations

import logging
import random
import threading
from typing import Any

from dhanhq import DhanContext, dhanhq

from .instruments import Instrument, load_instruments
from .matching import round_tick

log = logging.getLogger("paper.leader_bot")


class LeaderBot:
    def __init__(self, rest_url: str, client_id: str, access_token: str, seed: int = 1, pace_seconds: float = 1.0,
                 instruments: dict[str, Instrument] | None = None) -> None:
        ctx = DhanContext(client_id, access_token)
        ctx.get_dhan_http().base_url = rest_url
        ctx.get_dhan_http().timeout = 5
        self.dhan = dhanhq(ctx)
        self.pace = pace_seconds
        self.rng = random.Random(seed)
        self.instruments = instruments or load_instruments()
        self.equities = [i for i in self.instruments.values() if i.is_equity]
        self.options = [i for i in self.instruments.values() if i.is_option and i.trading_symbol.startswith(("NIFTY", "BANKNIFTY"))]
        self.actions = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "LeaderBot":
        self._thread = threading.Thread(target=self._run, name="leader-bot", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.pace * self.rng.uniform(0.5, 1.5)):
            try:
                self.step()
            except Exception:   # the bot must keep going whatever the exchange answers
                self.errors += 1
                log.exception("leader bot step failed")

    def _ok(self, answer: dict[str, Any], what: str) -> Any:
        self.actions += 1
        if answer.get("status") != "success":
            self.errors += 1
            log.info("leader bot %s refused: %s", what, answer.get("remarks"))
            return None
        return answer.get("data")

    def _ltp(self, ins: Instrument) -> float:
        return ins.start_price   # the bot has no market data feed; start price is close enough for limits

    def step(self) -> None:
        """One human-like action, weighted towards new entries."""
        roll = self.rng.random()
        if roll < 0.35:
            self._entry(self.rng.choice(self.equities))
        elif roll < 0.55:
            self._entry(self.rng.choice(self.options))
        elif roll < 0.7:
            self._modify_open()
        elif roll < 0.8:
            self._cancel_open()
        else:
            self._exit_position()

    def _entry(self, ins: Instrument) -> None:
        d, lots = self.dhan, self.rng.randint(1, 3)
        qty = lots * ins.lot_size if not ins.is_equity else self.rng.choice([1, 5, 10, 25, 50])
        side = d.BUY if ins.is_option or self.rng.random() < 0.7 else d.SELL
        product = self.rng.choice([d.INTRA, d.INTRA, d.MARGIN] if not ins.is_equity else [d.INTRA, d.CNC])
        if self.rng.random() < 0.5:
            self._ok(d.place_order(ins.security_id, ins.exchange_segment, side, qty, d.MARKET, product, 0,
                                   validity=d.IOC if self.rng.random() < 0.1 else d.DAY), "market entry")
        else:
            away = 0.995 if side == d.BUY else 1.005
            price = round_tick(self._ltp(ins) * away, ins.tick_size)
            self._ok(d.place_order(ins.security_id, ins.exchange_segment, side, qty, d.LIMIT, product, price), "limit entry")

    def _open_orders(self) -> list[dict[str, Any]]:
        book = self._ok(self.dhan.get_order_list(), "order book") or []
        return [o for o in book if o.get("orderStatus") in ("PENDING", "PART_TRADED")]

    def _modify_open(self) -> None:
        limits = [o for o in self._open_orders() if o["orderType"] in ("LIMIT", "STOP_LOSS")]
        if not limits:
            return
        o = self.rng.choice(limits)
        ins = self.instruments[o["securityId"]]
        price = round_tick(o["price"] * self.rng.uniform(0.998, 1.002), ins.tick_size)
        self._ok(self.dhan.modify_order(o["orderId"], o["orderType"], "", o["quantity"], price, o["triggerPrice"],
                                        o["disclosedQuantity"], o["validity"]), "modify")

    def _cancel_open(self) -> None:
        opened = self._open_orders()
        if opened:
            self._ok(self.dhan.cancel_order(self.rng.choice(opened)["orderId"]), "cancel")

    def _exit_position(self) -> None:
        positions = [p for p in self._ok(self.dhan.get_positions(), "positions") or [] if p.get("netQty")]
        if not positions:
            return
        p = self.rng.choice(positions)
        ins = self.instruments[p["securityId"]]
        d, net = self.dhan, int(p["netQty"])
        side = d.SELL if net > 0 else d.BUY
        lots = abs(net) // ins.lot_size
        qty = max(1, self.rng.randint(1, lots)) * ins.lot_size if lots else abs(net)
        if self.rng.random() < 0.4:   # protective stop below/above the market
            trigger = round_tick(self._ltp(ins) * (0.99 if side == d.SELL else 1.01), ins.tick_size)
            self._ok(d.place_order(ins.security_id, ins.exchange_segment, side, qty, d.SL, p["productType"],
                                   trigger, trigger_price=trigger), "stop exit")
        else:
            self._ok(d.place_order(ins.security_id, ins.exchange_segment, side, qty, d.MARKET, p["productType"], 0),
                     "partial exit")
