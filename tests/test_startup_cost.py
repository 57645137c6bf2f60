"""The holiday calendar (exchange_calendars, with pandas and numpy under it: 0.7 s to import and
64 MB) is the copier's only heavy dependency. A copier that does not enforce market hours never
loads it; one that does builds it while it starts, so that no order waits 80-110 ms for it.

Each case runs in a fresh interpreter: a calendar another test built would otherwise be cached."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import json, sys, tempfile, time
from datetime import datetime, timedelta, timezone
sys.path.insert(0, sys.argv[1])
from tests.conftest import config_dict, client, LEADER_ID, LEADER_TOKEN, wait_until
from copier.config import parse
from copier.tree import start_copier
from paper import AccountSpec, PaperExchange
from storage import Store
from storage import models as m
import trading.calendar

enforce = sys.argv[2] == "enforce"
wednesday_morning = datetime(2026, 11, 25, 10, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
exchange = PaperExchange(price_walk=False, session="open").start()
tmp = tempfile.mkdtemp()
followers = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 1}}]
config = parse(config_dict(exchange, __import__("pathlib").Path(tmp), followers,
                           {"market_hours": {"enforce": enforce}}))
exchange.add_account(AccountSpec(LEADER_ID, LEADER_TOKEN, 1e9))
exchange.add_account(AccountSpec(config.followers[0].client_id, config.followers[0].access_token, 1e9))
store = Store(config.storage.path)
copier = start_copier(config, store, clock=lambda: wednesday_morning)
built_at_start = trading.calendar._load.cache_info().currsize > 0
wait_until(lambda: exchange.socket_count() >= 2, 10)
price = round(exchange.price("2885") * 0.97, 1)
leader = client(exchange, LEADER_ID, LEADER_TOKEN)
order_id = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY", quantity=1,
                              order_type="LIMIT", product_type="INTRADAY", price=price)["data"]["orderId"]
row = wait_until(lambda: store.read(lambda: m.FollowerOrder.get_or_none(
    (m.FollowerOrder.leader_order_id == order_id) & (m.FollowerOrder.latency_ms.is_null(False)))), 20)
print(json.dumps({"built_at_start": built_at_start, "latency_ms": row.latency_ms,
                  "loaded": sorted(name for name in ("pandas", "numpy", "exchange_calendars") if name in sys.modules)}))
copier.stop()
store.close()
exchange.stop()
"""


def _start_and_copy_one_order(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_copier_not_enforcing_market_hours_never_loads_the_holiday_calendar_or_pandas():
    seen = _start_and_copy_one_order("off")
    assert seen["loaded"] == [], f"loaded although market hours are not enforced: {seen['loaded']}"
    assert not seen["built_at_start"]


def test_with_market_hours_enforced_the_calendar_is_built_at_start_not_by_the_first_order():
    seen = _start_and_copy_one_order("enforce")
    assert seen["built_at_start"], "the holiday calendar was not built while the copier started"
    assert "exchange_calendars" in seen["loaded"]
    # building it takes 80-110 ms here; a copy takes a few
    assert seen["latency_ms"] < 40, f"the first copy took {seen['latency_ms']:.1f} ms"
