"""`python -m paper`: run the paper exchange until Ctrl-C, printing its URLs and demo accounts."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from .control import is_loopback
from .exchange import AccountSpec, PaperExchange
from .freeze import FreezeLimits
from .leader_bot import LeaderBot


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m paper", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="listen address (beyond loopback: give --control-token)")
    p.add_argument("--control-token", default=os.environ.get("PAPER_CONTROL_TOKEN"),
                   help="token the control endpoint requires (Authorization: Bearer TOKEN); needed beyond "
                        "loopback (default: $PAPER_CONTROL_TOKEN)")
    p.add_argument("--port", type=int, default=0, help="REST port (0: any free port)")
    p.add_argument("--ws-port", type=int, default=0, help="order-update socket port (0: any free port)")
    p.add_argument("--accounts", type=int, default=3, help="demo accounts 1000000001..")
    p.add_argument("--funds", type=float, default=1_000_000.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tick-seconds", type=float, default=0.2)
    p.add_argument("--no-price-walk", action="store_true")
    p.add_argument("--session", default="open", choices=["open", "pre_open", "closed", "holiday", "auto"])
    p.add_argument("--orders-per-second", type=int, default=None, help="order rate limit per account (0: none)")
    p.add_argument("--orders-per-minute", type=int, default=None, help="order rate limit per account and minute (0: none)")
    p.add_argument("--orders-per-hour", type=int, default=None, help="order rate limit per account and hour (0: none)")
    p.add_argument("--orders-per-day", type=int, default=None, help="order rate limit per account and day (0: none)")
    p.add_argument("--unlimited", action="store_true", help="no order rate limits (benchmarks)")
    p.add_argument("--no-sequence", action="store_true",
                   help="leave the per-order Sequence out of order-update frames, as Dhan's own feed does")
    p.add_argument("--bot", action="store_true", help="run a LeaderBot on the first account")
    p.add_argument("--freeze-limits", default=None, metavar="CSV",
                   help="freeze quantity table (exchange_segment,underlying,freeze_qty) instead of the shipped one")
    args = p.parse_args(argv)
    if not args.control_token and not is_loopback(args.host):
        p.error(f"--host {args.host} is beyond loopback: its control endpoint moves prices and fills orders "
                "for anyone who reaches it; give --control-token TOKEN (or set PAPER_CONTROL_TOKEN)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    limits: dict[str, int | None] | None = None
    if args.unlimited:
        limits = {"per_second": None, "per_minute": None, "per_hour": None, "per_day": None}
    else:
        limits = {}
        if args.orders_per_second is not None:
            limits["per_second"] = args.orders_per_second or None
        if args.orders_per_minute is not None:
            limits["per_minute"] = args.orders_per_minute or None
        if args.orders_per_hour is not None:
            limits["per_hour"] = args.orders_per_hour or None
        if args.orders_per_day is not None:
            limits["per_day"] = args.orders_per_day or None
    try:
        freeze = FreezeLimits(args.freeze_limits) if args.freeze_limits else None
    except (OSError, ValueError) as e:
        p.error(f"--freeze-limits: {e}")
    ex = PaperExchange(seed=args.seed, price_walk=not args.no_price_walk, tick_seconds=args.tick_seconds,
                       session=args.session, rate_limits=limits, host=args.host, port=args.port,
                       ws_port=args.ws_port, sequence=not args.no_sequence,
                       control_token=args.control_token or None, freeze_limits=freeze).start()
    specs = [AccountSpec(f"{1000000001 + i}", f"paper-token-{1000000001 + i}", args.funds) for i in range(args.accounts)]
    for spec in specs:
        ex.add_account(spec)
    print(f"REST    {ex.rest_url}", flush=True)
    print(f"WS      {ex.ws_url}", flush=True)
    print(f"CONTROL {ex.control_url}", flush=True)
    for spec in specs:   # demo credentials of a loopback exchange, printed so a demo can log in
        print(f"ACCOUNT {spec.client_id} {spec.access_token}", flush=True)
    bot = LeaderBot(ex.rest_url, specs[0].client_id, specs[0].access_token).start() if args.bot and specs else None
    print("READY", flush=True)

    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    if bot:
        bot.stop()
    ex.stop()


if __name__ == "__main__":
    main()
