"""Several leaders in one process (`leaders:`): each follower copies the leaders it subscribes to,
sized by its rule for each; an account that leads and follows never copies its copies back.
Counted on the exchange's books."""
from __future__ import annotations

import io
import random
import sqlite3
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from actors.feed import baseline_setting
from app.live_view import render
from copier.config import ConfigError, parse
from copier.tree import start_copier
from observability import metrics
from paper import AccountSpec, PaperExchange
from storage import Store
from trading.leader import is_leader, leader_account, leader_label
from trading.orders import (OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity, correlation_id,
                            made_by_copier)
from tests.conftest import (LEADER_ID, LEADER_TOKEN, RELIANCE, ROOT, Rig, client, config_dict, end_processes,
                            kill_during_burst, run_command, start_copier_process, start_paper_process, wait_until)

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


def start(rig: Rig, config_path: str | None = None) -> None:
    rig.copier = start_copier(rig.config, rig.store, config_path=config_path)
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


def test_one_leaders_full_exit_leaves_the_copy_of_another_leaders_order_resting(make_rig, tmp_path):
    """Beta's LIMIT buy fills where f1's copy of it rests; alpha then buys and sells everything in
    the same instrument. Alpha's exit cancels copies of alpha's orders only: beta still holds what
    f1's resting copy follows."""
    rig, beta = several_leaders(make_rig, tmp_path, FOLLOWERS)
    f1 = rig.follower_ids["f1"]
    from_beta = place(beta, rig, quantity=10)  # 3% under the market: it rests
    wait_until(lambda: len(book(rig, f1)) == 1, 10, message="f1's copy of beta's order")
    rig.exchange.fill(BETA_ID, from_beta)
    price = rig.exchange.price(RELIANCE)  # alpha's orders priced through the market: they trade at once
    rig.place(quantity=20, price=round(price * 1.05, 1))
    exit_order = rig.place(quantity=20, side="SELL", price=round(price * 0.95, 1))
    rig.follower_copy(exit_order, timeout=20)  # sized once any copy it cancels has ended
    resting = next(o for o in book(rig, f1) if o["quantity"] == 2)
    assert resting["orderStatus"] == "PENDING", resting


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


def test_a_follower_added_while_running_copies_only_its_leaders_with_its_sizing_for_each(make_rig, tmp_path):
    rig, beta = several_leaders(make_rig, tmp_path, FOLLOWERS)
    raw = yaml.safe_load(rig.config_yaml)
    path = tmp_path / "running.yaml"
    path.write_text(yaml.safe_dump(raw))
    rig.copier.stop()
    start(rig, config_path=str(path))
    f3_id, f3_token = "1200000003", "follower-secret-token-0003"
    rig.exchange.add_account(AccountSpec(f3_id, f3_token, 5_000_000))
    raw["followers"].append({**raw["followers"][1], "name": "f3", "client_id": f3_id, "access_token": f3_token,
                             "leaders": [{"name": "beta", "sizing": {"strategy": "fixed_lots", "lots": 3}}]})
    path.write_text(yaml.safe_dump(raw))
    rig.store.requests.submit({"action": "reload"}, "test")
    wait_until(lambda: "f3" in rig.copier.roster.followers(), 20, message="f3 added by the reload")

    rig.place(quantity=10)
    from_beta = place(beta, rig, quantity=10)
    wait_until(lambda: len(book(rig, f3_id)) == 1 and len(book(rig, rig.follower_ids["f2"])) == 1, 10,
               message="beta's order copied to f3 and f2")
    wait_until(lambda: len(book(rig, rig.follower_ids["f1"])) == 2, 10, message="both orders copied to f1")
    assert [o["quantity"] for o in book(rig, f3_id)] == [3]  # its rule for beta; alpha's order not copied
    assert rig.copy_row(from_beta, "f3") is not None


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


# -- the config, and the names of leader accounts ------------------------------------------------
def _config(**raw: Any) -> Any:
    return parse({"mode": "paper", "followers": [{"name": "f1"}], **raw})


@pytest.mark.parametrize("raw, error", [
    ({"leaders": [{"name": "alpha"}], "leader": {}}, "leaders: use either leader: (one leader) or leaders: (several), not both"),
    ({"leaders": []}, "leaders: must be a non-empty list of leader accounts, each with a name"),
    ({"leaders": [{"client_id": "1"}]}, "leaders[0].name: is required"),
    ({"leaders": [{"name": "a b"}]}, "leaders[0].name: must be 1-32 letters, digits, '-' or '_', got 'a b'"),
    ({"leaders": [{"name": "alpha"}, {"name": "alpha"}]}, "leaders[1].name: 'alpha' is used twice"),
    ({"leaders": [{"name": "a", "client_id": "7"}, {"name": "b", "client_id": "7"}]},
     "leaders[1].client_id: client 7 is already leaders[0]"),
    ({"leaders": [{"name": "alpha"}], "followers": [{"name": "f1", "leaders": ["gamma"]}]},
     "followers[0].leaders[0].name: no leader named 'gamma' (leaders: alpha)"),
    ({"followers": [{"name": "f1", "leaders": ["alpha"]}]},
     "followers[0].leaders: is used only with several leaders (leaders: [...]); with leader: every follower "
     "copies the one leader"),
    ({"leaders": [{"name": "alpha"}], "followers": [{"name": "f1", "leaders": [{"name": "alpha", "sizing": {"ratio": 0}}]}]},
     "followers[0].leaders[0].sizing.ratio: must be > 0, got 0"),
])
def test_a_wrong_leaders_config_names_the_key(raw, error):
    with pytest.raises(ConfigError) as refused:
        _config(**raw)
    assert str(refused.value) == error


def test_renewing_tokens_is_refused_for_an_account_that_leads_and_follows(monkeypatch):
    """Renewing its token under one name would expire the token its other name still uses."""
    monkeypatch.setenv("COPYTRADER_TOKEN_KEY", "a" * 43 + "=")
    accounts = {"leaders": [{"name": "alpha", "client_id": "1", "access_token": "t"},
                            {"name": "beta", "client_id": "2", "access_token": "t"}],
                "followers": [{"name": "fb", "client_id": "2", "access_token": "t", "leaders": ["alpha"]}]}
    with pytest.raises(ConfigError) as refused:
        parse({"mode": "live", **accounts, "tokens": {"renew_every_minutes": 600}})
    assert str(refused.value) == ("tokens.renew_every_minutes: client 2 is leaders[1] and followers[0]: renewing "
                                  "its token as one would expire the token the other uses; renew it by hand "
                                  "(python run.py token NAME)")
    parse({"mode": "live", **accounts})  # without renewal, the same accounts are fine


def test_several_leaders_are_refused_as_shards_naming_what_to_do_instead():
    accounts = [{"name": n, "client_id": str(i), "access_token": "t"} for i, n in enumerate(("a", "b", "f1", "f2"))]
    with pytest.raises(ConfigError) as refused:
        parse({"mode": "live", "leaders": accounts[:2], "followers": accounts[2:], "shards": 2})
    assert str(refused.value) == ("leaders: several leaders cannot run as shards yet: run one copier per leader "
                                  "with shards, or several leaders in one process")


def test_a_follower_copies_every_leader_unless_it_lists_its_own_with_their_sizing():
    config = _config(leaders=[{"name": "alpha"}, {"name": "beta"}],
                     followers=[{"name": "f1"}, {"name": "f2", "sizing": {"ratio": 0.5},
                                                 "leaders": [{"name": "beta", "sizing": {"strategy": "fixed_lots"}}]}])
    assert [leader.name for leader in config.all_leaders] == ["leader:alpha", "leader:beta"]
    f1, f2 = config.followers
    assert f1.follows("leader:alpha") and f1.follows("leader:beta") and f1.sizing_for("leader:beta") is None
    assert not f2.follows("leader:alpha") and f2.follows("leader:beta")
    assert f2.sizing_for("leader:beta").strategy == "fixed_lots" and f2.sizing.ratio == 0.5
    assert [leader.name for leader in _config().all_leaders] == ["leader"]  # `leader:` is the one leader


@pytest.mark.parametrize("name, account, label", [("", "leader", "leader"), ("leader", "leader", "leader"),
                                                   ("alpha", "leader:alpha", "leader alpha")])
def test_a_leader_account_name_says_it_is_a_leaders(name, account, label):
    assert leader_account(name) == account and is_leader(account) and leader_label(account) == label
    assert leader_account(account) == account and not is_leader("f1")


@pytest.mark.parametrize("cid, ours", [
    (correlation_id("5126112300001", "f1"), True), ("CT" + "0" * 22, True), ("my-own-tag", False), (None, False),
    ("CT" + "0" * 21, False), ("ct" + "a" * 22, False)])
def test_the_copiers_own_orders_are_known_by_their_correlation_id(cid, ours):
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 1)
    update = OrderUpdate("1", OrderStatus.PENDING, terms, correlation_id=cid)
    assert made_by_copier(update) is ours


# -- a SIGKILL in the middle of two leaders' bursts ------------------------------------------------
BURST = 24  # orders per leader


def test_sigkill_while_two_leaders_burst_never_doubles_misses_or_loops_a_copy(tmp_path):
    """alpha and beta place at once while the real run.py is SIGKILLed three times; beta's account
    also follows alpha. On the books: every leader order copied once to each of its followers,
    and the copies of alpha's orders in beta's account never copied on to beta's follower."""
    rng = random.Random(6)
    exchange, urls, accounts = start_paper_process("--accounts", "4", "--no-price-walk", "--unlimited")
    copier: subprocess.Popen | None = None
    try:
        (alpha_id, alpha_token), (beta_id, beta_token), (f1_id, f1_token), (f2_id, f2_token) = accounts
        endpoints = {"api_base_url": urls["REST"], "order_update_url": urls["WS"]}
        ratio = {"sizing": {"strategy": "fixed_ratio", "ratio": 1}}
        raw = {
            "mode": "live",
            "leaders": [{"name": "alpha", "client_id": alpha_id, "access_token": alpha_token, **endpoints},
                        {"name": "beta", "client_id": beta_id, "access_token": beta_token, **endpoints}],
            "followers": [
                {"name": "f1", "client_id": f1_id, "access_token": f1_token, **endpoints, **ratio},
                {"name": "fb", "client_id": beta_id, "access_token": beta_token, **endpoints, **ratio,
                 "leaders": ["alpha"]},
                {"name": "f2", "client_id": f2_id, "access_token": f2_token, **endpoints, **ratio,
                 "leaders": ["beta"]}],
            "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")},
            "market_hours": {"enforce": False}, "storage": {"path": str(tmp_path / "copytrader.db")},
            "metrics": {"port": 0}, "rate_limits": {"orders_per_second": 100, "orders_per_minute": 1000}}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        db = tmp_path / "copytrader.db"

        def ready() -> bool:
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    return conn.execute("select count(*) from setting where key in (?, ?)",
                                        tuple(baseline_setting(a) for a in ("leader:alpha", "leader:beta"))
                                        ).fetchone()[0] == 2
            except sqlite3.Error:
                return False

        copier = start_copier_process(path)
        wait_until(lambda: db.exists() and ready(), 30, message="copier ready")
        placed: dict[str, list[str]] = {"alpha": [], "beta": []}
        done = threading.Event()

        def burst(name: str, client_id: str, token: str) -> None:
            leader = client(urls["REST"], client_id, token, timeout=10)
            for i in range(BURST):
                answer = leader.place_order(security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY",
                                            quantity=10 + i % 5, order_type="LIMIT", product_type="INTRADAY",
                                            price=1400.0 + (i % 40))
                assert answer["status"] == "success", answer
                placed[name].append(answer["data"]["orderId"])
                if done.wait(rng.uniform(0.02, 0.08)):
                    return

        threads = [threading.Thread(target=burst, args=("alpha", alpha_id, alpha_token)),
                   threading.Thread(target=burst, args=("beta", beta_id, beta_token))]
        for thread in threads:
            thread.start()
        copier = kill_during_burst(copier, lambda: start_copier_process(path),
                                   lambda: placed["alpha"] and placed["beta"], rng, 3)
        for thread in threads:
            thread.join(60)
        assert len(placed["alpha"]) == len(placed["beta"]) == BURST

        def books() -> dict[str, list[dict]]:
            return {name: client(urls["REST"], cid, tok, timeout=10).get_order_list()["data"]
                    for name, cid, tok in (("f1", f1_id, f1_token), ("beta", beta_id, beta_token),
                                           ("f2", f2_id, f2_token))}

        expected = {"f1": {correlation_id(o, "f1") for o in placed["alpha"] + placed["beta"]},
                    "beta": {correlation_id(o, "fb") for o in placed["alpha"]},
                    "f2": {correlation_id(o, "f2") for o in placed["beta"]}}
        wait_until(lambda: all({e.get("correlationId") for e in book} >= expected[name]
                               for name, book in books().items()), 60, interval=0.2,
                   message="every leader order copied to each of its followers")
        held = books()
        for name, book in held.items():
            copies = Counter(e.get("correlationId") for e in book if made_by_copier_id(e.get("correlationId")))
            assert max(copies.values()) == 1, f"{name}: a copy placed twice"
            assert set(copies) == expected[name], f"{name}: a copy missing, or one no leader order accounts for"
        assert len(held["f2"]) == BURST  # beta's own orders only: its copies of alpha's were never copied on
        print(f"2 leaders x {BURST} orders, 3 SIGKILLs: {sum(len(b) for b in held.values())} orders on the books, "
              "0 doubled, 0 missed, 0 copied back")
    finally:
        end_processes(copier, exchange)


def made_by_copier_id(cid: str | None) -> bool:
    terms = OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, OrderType.LIMIT, Validity.DAY, 1)
    return made_by_copier(OrderUpdate("1", OrderStatus.PENDING, terms, correlation_id=cid))


def test_the_live_view_names_each_orders_leader(make_rig, tmp_path):
    rig, beta = several_leaders(make_rig, tmp_path, FOLLOWERS)
    from_alpha, from_beta = rig.place(quantity=10), place(beta, rig, quantity=10)
    wait_until(lambda: rig.copy_row(from_beta, "f2") and rig.copy_row(from_alpha, "f1"), 10, message="copies made")
    console = Console(file=io.StringIO(), width=100, height=24, force_terminal=False, color_system=None)
    console.print(render(rig.store, rig.config))
    lines = console.file.getvalue().splitlines()
    row = {order: next(line for line in lines if order in line) for order in (from_alpha, from_beta)}
    assert "alpha PENDING" in row[from_alpha] and "beta PENDING" in row[from_beta], "\n".join(lines)
    assert "leader alpha" in lines[0] and "leader beta" in lines[0]  # the title: both leaders
    listed = run_command(rig, tmp_path, "orders").stdout.splitlines()  # and `run.py orders`
    assert next(line for line in listed if line.startswith(from_beta)).endswith("PENDING (leader beta)"), listed


def test_status_and_follower_list_show_each_leader_as_a_leader(make_rig, tmp_path):
    rig, beta = several_leaders(make_rig, tmp_path, FOLLOWERS)
    from_beta = place(beta, rig, quantity=10)
    wait_until(lambda: rig.copy_row(from_beta, "f2"), 10, message="beta's order copied")
    status = run_command(rig, tmp_path, "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr[-2000:]
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.split()}
    assert "open orders 1" in lines["leader:beta"] and "open orders 0" in lines["leader:alpha"], status.stdout
    assert "open orders 1" in lines["f1"] and "open orders 1" in lines["f2"], status.stdout
    listed = run_command(rig, tmp_path, "follower", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["f1", "f2"], listed.stdout
