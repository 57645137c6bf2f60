"""An expired or invalid access token gives a clear error naming the account, an
alert, no crash loop; tokens are renewed through Dhan's renewal endpoint when configured."""
from __future__ import annotations

from cryptography.fernet import Fernet

from observability import metrics
from storage import models as m
from tests.conftest import LEADER_ID, client, wait_until

TWO = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
       {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}}]


def test_B_6_expired_follower_token_suspends_that_account_only(make_rig):
    rig = make_rig(followers=TWO)
    restarts = sum(s.get() for s in [metrics.ACTOR_RESTARTS.labels(k)._value for k in ("order", "feed", "rate_limiter")])
    rig.exchange.expire_token(rig.follower_ids["f1"])
    first = rig.place(quantity=10)
    assert rig.follower_copy(first, "f2")["quantity"] == 10  # the other follower is untouched
    row = rig.wait_row(first, lambda r: r.status == "REJECTED", "f1", message="f1 refused")
    assert "DH-901" in row.last_error
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "auth:f1")),
                       message="an alert naming f1")
    assert "follower f1" in alert.message and "token" in alert.message

    second = rig.place(quantity=12, price=1420.0)  # no crash loop, no request storm: a recorded skip
    assert rig.wait_skip(second, "f1").reason == "account_suspended"
    assert rig.follower_copy(second, "f2")["quantity"] == 12
    calls = [r for r in rig.exchange.request_log(rig.follower_ids["f1"]) if r["method"] == "POST" and r["path"] == "/orders"]
    assert len(calls) == 1
    assert sum(s.get() for s in [metrics.ACTOR_RESTARTS.labels(k)._value for k in ("order", "feed", "rate_limiter")]) == restarts


def test_B_6_refused_socket_login_is_alerted_with_the_account(rig):
    rig.exchange.expire_token(LEADER_ID)
    rig.exchange.faults.drop_sockets()  # the next login uses the expired token
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "auth:leader")),
                       message="an alert naming the leader")
    assert "leader" in alert.message and "DH-901" in alert.message


def test_B_6_tokens_renewed_when_configured(make_rig, monkeypatch):
    monkeypatch.setenv("COPYTRADER_TOKEN_KEY", Fernet.generate_key().decode())  # renewed tokens are stored
    rig = make_rig(config={"tokens": {"renew_every_minutes": 0.05,  # every 3 s
                                      "renew_leader_every_minutes": 0.05}})  # the leader's has its own key
    old = rig.config.leader.access_token
    wait_until(lambda: any(r["path"] == "/RenewToken" for r in rig.exchange.request_log(LEADER_ID)),
               message="leader token renewed")
    wait_until(lambda: rig.exchange.account(LEADER_ID).access_token != old, message="new leader token issued")
    rig.exchange.faults.drop_sockets()  # logins from now on must use the renewed tokens
    wait_until(lambda: rig.exchange.socket_count() >= 2, message="sockets back with renewed tokens")
    # the test acts as the leader with the current token (renewal expired the one it had)
    rig.leader = client(rig.exchange, LEADER_ID, rig.exchange.account(LEADER_ID).access_token)
    assert rig.follower_copy(rig.place(quantity=10))["quantity"] == 5
    assert rig.store.read(lambda: m.Alert.select().where(m.Alert.key.startswith("auth:")).count()) == 0
