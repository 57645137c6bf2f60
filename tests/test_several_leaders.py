"""Several leaders in one process (`leaders:`): each follower copies the leaders it subscribes to,
sized by its rule for each; an account that leads and follows never copies its copies back.
Counted on the exchange's books."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from actors.feed import baseline_setting
from copier.config import parse
from copier.tree import start_copier
from observability import metrics
from paper import AccountSpec, PaperExchange
from storage import Store
from tests.conftest import (LEADER_ID, LEADER_TOKEN, RELIANCE, Rig, client, config_dict, run_command,
                            wait_until)

BETA_ID, BETA_TOKEN = "1100000002", "beta-secret-token-0002"


def several_leaders(make_rig, tmp_path: Path, followers: list[dict], beta: tuple[str, str] = (BETA_ID, BETA_TOKEN),
                    ) -> tuple[Rig, Any]:
    """A rig whose config has two leaders, alpha (the rig's leader account) and beta; returns it
    and a client of beta's account."""
    rig = make_rig(followers=[{k: v for k, v in f.items() if k != "leaders"} for f in followers], start=False)
    ex: PaperExchange = rig.exchange
    endpoints = {"api_base_url": ex.rest_url, "order_update_url": ex.ws_url}
    raw = config_dict(ex, tmp_path, followers)
    del raw["leader"]
    raw["leaders"] = [{"name": "alpha", "client_id": LEADER_ID, "access_token": LEADER_TOKEN, **endpoints},
                      {"name": "beta", "client_id": beta[0], "access_token": beta[1], **endpoints}]
    for follower, given in zip(raw["followers"], followers):  # a follower may be an account that leads
        follower.update({k: given[k] for k in ("client_id", "access_token") if k in given})
    rig.config = parse(raw)
    rig.config_yaml = yaml.safe_dump(raw)
    if beta[0] not in [f.client_id for f in rig.config.followers]:
        ex.add_account(AccountSpec(beta[0], beta[1], 50_000_000))
    start(rig)
    return rig, client(ex, *beta)


def start(rig: Rig) -> None:
    rig.copier = start_copier(rig.config, rig.store)
    wait_until(lambda: all(rig.store.settings.get(baseline_setting(a)) for a in ("leader:alpha", "leader:beta")), 10,
               message="both leaders' baselines")
    wait_until(lambda: rig.exchange.socket_count() >= 2 + len(rig.config.followers), 10, message="sockets logged in")


def place(leader: Any, rig: Rig, quantity: int, side: str = "BUY") -> str:
    price = round(rig.exchange.price(RELIANCE) * (0.97 if side == "BUY" else 1.03), 1)
    answer = leader.place_order(security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type=side,
                                quantity=quantity, order_type="LIMIT", product_type="INTRADAY", price=price)
    assert answer["status"] == "success", answer
    return answer["data"]["orderId"]


def book(rig: Rig, client_id: str) -> list[dict]:
    return rig.exchange.orders(client_id)


def copies_of(rig: Rig, client_id: str) -> list[dict]:
    return [o for o in book(rig, client_id) if (o.get("correlationId") or "").startswith("CT")]


FOLLOWERS = [
    # f1 copies both, at half the leader's quantity, but beta's orders at 2 shares whatever their size
    {"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5},
     "leaders": ["alpha", {"name": "beta", "sizing": {"strategy": "fixed_lots", "lots": 2}}]},
    # f2 copies beta only, one for one
    {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 1}, "leaders": ["beta"]},
]


def test_each_follower_copies_only_its_leaders_each_sized_by_its_rule_for_that_leader(make_rig, tmp_path):
    rig, beta = several_leaders(make_rig, tmp_path, FOLLOWERS)
    f1, f2 = rig.follower_ids["f1"], rig.follower_ids["f2"]

    from_alpha = rig.place(quantity=10)
    wait_until(lambda: len(book(rig, f1)) == 1, 10, message="f1's copy of alpha's order")
    from_beta = place(beta, rig, quantity=10)
    wait_until(lambda: len(book(rig, f2)) == 1 and len(book(rig, f1)) == 2, 10, message="beta's copies")

    assert sorted(o["quantity"] for o in book(rig, f1)) == [2, 5]  # beta's at 2 lots, alpha's at half
    assert [o["quantity"] for o in book(rig, f2)] == [10]  # beta's only: f2 does not follow alpha
    assert rig.skips(from_alpha, "f2") == [] and rig.copy_row(from_alpha, "f2") is None

    # the leader's modify and cancel reach the copies of that leader's order only
    answer = beta.modify_order(from_beta, order_type="LIMIT", leg_name="", quantity=20,
                               price=rig.exchange.order(BETA_ID, from_beta)["price"], trigger_price=0,
                               disclosed_quantity=0, validity="DAY")
    assert answer["status"] == "success", answer
    wait_until(lambda: [o["quantity"] for o in book(rig, f2)] == [20], 10, message="f2's copy modified")
    assert sorted(o["quantity"] for o in book(rig, f1)) == [2, 5]  # fixed lots for beta: still 2
    beta.cancel_order(from_beta)
    wait_until(lambda: book(rig, f2)[0]["orderStatus"] == "CANCELLED", 10, message="f2's copy cancelled")
    wait_until(lambda: sorted(o["orderStatus"] for o in book(rig, f1)) == ["CANCELLED", "PENDING"], 10,
               message="f1's copy of beta's order cancelled, of alpha's left open")
    assert rig.exchange.order(f1, [o for o in book(rig, f1) if o["quantity"] == 5][0]["orderId"])["orderStatus"] \
        == "PENDING"


def test_a_restarted_copier_sizes_each_leaders_orders_by_that_leaders_rule(make_rig, tmp_path):
    rig, beta = several_leaders(make_rig, tmp_path, FOLLOWERS)
    f1 = rig.follower_ids["f1"]
    from_beta = place(beta, rig, quantity=10)
    wait_until(lambda: [o["quantity"] for o in book(rig, f1)] == [2], 10, message="f1's copy of beta's order")

    rig.copier.stop()
    rig.store.close()
    rig.store = Store(rig.config.storage.path)
    start(rig)
    # a quantity change re-sizes the copy: by f1's rule for beta (2 lots), known after the restart too
    answer = beta.modify_order(from_beta, order_type="LIMIT", leg_name="", quantity=40,
                               price=rig.exchange.order(BETA_ID, from_beta)["price"], trigger_price=0,
                               disclosed_quantity=0, validity="DAY")
    assert answer["status"] == "success", answer
    f2 = rig.follower_ids["f2"]
    wait_until(lambda: [o["quantity"] for o in book(rig, f2)] == [40], 10, message="f2's copy re-sized")
    assert [o["quantity"] for o in book(rig, f1)] == [2]
    assert len(book(rig, f1)) == 1 and len(book(rig, f2)) == 1  # nothing placed again


def test_an_account_that_leads_and_follows_never_copies_its_own_copies_back(make_rig, tmp_path):
    followers = [
        # beta's account follows alpha...
        {"name": "fb", "client_id": BETA_ID, "access_token": BETA_TOKEN, "leaders": ["alpha"],
         "sizing": {"strategy": "fixed_ratio", "ratio": 1}, "funds": 50_000_000},
        # ...and fc follows beta
        {"name": "fc", "leaders": ["beta"], "sizing": {"strategy": "fixed_ratio", "ratio": 1}},
    ]
    rig, beta = several_leaders(make_rig, tmp_path, followers)
    fc = rig.follower_ids["fc"]

    rig.place(quantity=10)  # alpha's order: copied into beta's account, which fc follows
    wait_until(lambda: len(copies_of(rig, BETA_ID)) == 1, 10, message="alpha's order copied into beta's account")
    wait_until(lambda: metrics.OWN_COPIES_IGNORED.labels("leader:beta")._value.get() >= 1, 10,
               message="beta's leader feed recognised the copy as the copier's own")
    own = place(beta, rig, quantity=7)  # beta trading for itself: copied to fc
    wait_until(lambda: len(book(rig, fc)) == 1, 10, message="fc's copy of beta's own order")

    assert [o["quantity"] for o in book(rig, fc)] == [7]  # the copy in beta's account was not copied to fc
    assert len(book(rig, BETA_ID)) == 2 and len(book(rig, LEADER_ID)) == 1  # nothing copied back to alpha
    assert rig.copy_row(own, "fb") is None  # (fb follows alpha only)
    report = run_command(rig, tmp_path, "reconcile")  # the copy in beta's book is no beta order never copied
    assert report.returncode == 0 and "0 divergences" in report.stdout, report.stdout + report.stderr
