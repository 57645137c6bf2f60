"""Accounts and their tokens: every account is checked before anything is copied, a refused token
pauses only its follower (which resumes by itself once a working token is given), and renewed
tokens are stored encrypted so that they survive a restart."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cryptography.fernet import Fernet

from copier.config import ConfigError, parse
from paper import AccountSpec, PaperExchange
from storage import models as m
from copier.tree import start_copier
from tests.conftest import LEADER_ID, LEADER_TOKEN, ROOT, client, config_dict, wait_until

TWO = [{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
       {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 1.0}}]
KEY_ENV = "COPYTRADER_TOKEN_KEY"
REFUSED_EXIT = 2  # every refusal to start, config errors included (README: "Exit status")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(config: dict, tmp_path: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
         timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "run.py", "--config", str(path), *args], cwd=ROOT, input=stdin,
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"run.py {' '.join(args)} still running after {timeout}s; stderr tail: "
                             f"{(exc.stderr or b'')[-600:]!r}") from None
    return done, time.monotonic() - started


def _paper(followers: int = 1) -> PaperExchange:
    ex = PaperExchange(seed=3, price_walk=False, tick_seconds=0.05, session="open").start()
    ex.add_account(AccountSpec(LEADER_ID, LEADER_TOKEN, 50_000_000))
    for i in range(followers):
        ex.add_account(AccountSpec(f"12000000{i + 1:02d}", f"follower-secret-token-{i + 1:04d}", 5_000_000))
    return ex


# -- refusing to start ------------------------------------------------------------------------------
def test_wrong_leader_token_refuses_to_start_naming_the_leader_and_its_token_source(tmp_path):
    ex = _paper()
    try:
        config = config_dict(ex, tmp_path, TWO[:1], None)
        config["leader"]["access_token"] = "${DHAN_LEADER_TOKEN}"
        done, elapsed = _run(config, tmp_path, "run", "--no-view", env={"DHAN_LEADER_TOKEN": "wrong-token-0123456789"})
        lines = [line for line in done.stderr.splitlines() if "environment variable DHAN_LEADER_TOKEN" in line]
        assert done.returncode == REFUSED_EXIT, done.stderr[-1000:]
        assert elapsed < 10
        assert len(lines) == 1 and "leader" in lines[0] and "DH-901" in lines[0], done.stderr[-1000:]
        assert "Traceback" not in done.stderr and "wrong-token-0123456789" not in done.stderr
        assert not [r for r in ex.request_log() if r["method"] == "POST"], "nothing may be placed"
    finally:
        ex.stop()


def test_unreachable_broker_refuses_to_start_naming_the_account(tmp_path):
    closed = _free_port()
    where = SimpleNamespace(rest_url=f"http://127.0.0.1:{closed}/v2", ws_url=f"ws://127.0.0.1:{closed}")
    config = config_dict(where, tmp_path, TWO[:1], None)  # type: ignore[arg-type]
    done, elapsed = _run(config, tmp_path, "run", "--no-view")
    assert done.returncode == REFUSED_EXIT, done.stderr[-1000:]
    assert elapsed < 10
    lines = [line for line in done.stderr.splitlines() if "unreachable" in line]
    assert len(lines) == 1 and "leader" in lines[0] and f"127.0.0.1:{closed}" in lines[0], done.stderr[-1000:]
    assert "Traceback" not in done.stderr


def test_a_start_refused_for_a_wrong_url_leaves_the_storage_to_the_corrected_config(tmp_path):
    closed = _free_port()
    ex = _paper()
    try:
        config = config_dict(ex, tmp_path, TWO[:1], None)
        config["leader"]["api_base_url"] = f"http://127.0.0.1:{closed}/v2"  # a typo in the port
        done, _elapsed = _run(config, tmp_path, "run", "--no-view")
        assert done.returncode == REFUSED_EXIT and "unreachable" in done.stderr, done.stderr[-1000:]
        config["leader"]["api_base_url"] = ex.rest_url  # fixed: the storage is still this config's to take
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        copier = subprocess.Popen([sys.executable, "run.py", "--config", str(tmp_path / "config.yaml"), "run",
                                   "--no-view"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: copier.poll() is not None or ex.socket_count() >= 2, 20, message="the copier started")
            assert copier.poll() is None, copier.stderr.read() if copier.stderr else ""
        finally:
            copier.send_signal(signal.SIGINT)
            assert copier.wait(20) == 0
    finally:
        ex.stop()


def test_unreachable_follower_broker_refuses_the_start_naming_the_follower(make_rig):
    from copier.accounts import StartRefused

    rig = make_rig(followers=TWO, start=False)
    closed = f"http://127.0.0.1:{_free_port()}/v2"
    f2 = rig.config.followers[1].model_copy(update={"api_base_url": closed})
    rig.config = rig.config.model_copy(update={"followers": (rig.config.followers[0], f2)})
    with pytest.raises(StartRefused, match="follower f2 .*unreachable"):
        rig.copier = start_copier(rig.config, rig.store)
    assert not [r for r in rig.exchange.request_log() if r["method"] == "POST"]


def test_refused_stored_token_at_start_names_that_source(make_rig, monkeypatch):
    from copier.accounts import StartRefused
    from storage.tokens import TokenFile, fingerprint, token_file_path

    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    rig = make_rig(start=False)
    TokenFile.from_environment(token_file_path(rig.config.storage.path)).save(
        LEADER_ID, "leader", "renewed-but-revoked-0001", fingerprint(LEADER_TOKEN))
    with pytest.raises(StartRefused) as refused:
        rig.copier = start_copier(rig.config, rig.store)
    assert "leader" in str(refused.value) and "stored renewed token" in str(refused.value)
    assert "DH-901" in str(refused.value) and "renewed-but-revoked" not in str(refused.value)


def test_follower_refused_at_start_is_paused_and_the_others_copy(make_rig):
    rig = make_rig(followers=TWO, start=False)
    rig.exchange.expire_token(rig.follower_ids["f1"])
    rig.copier = start_copier(rig.config, rig.store)
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "auth:f1")),
                       message="an alert naming f1")
    assert alert.level == "critical" and "f1" in alert.message and "config file" in alert.message
    wait_until(lambda: rig.exchange.socket_count(LEADER_ID) and rig.exchange.socket_count(rig.follower_ids["f2"]),
               message="leader and f2 sockets")
    order = rig.place(quantity=10)
    assert rig.follower_copy(order, "f2")["quantity"] == 10
    assert rig.wait_skip(order, "f1").reason == "account_suspended"
    assert rig.follower_placements("f1") == 0


# -- a follower's token expiring while the copier runs ----------------------------------------------
def test_follower_token_expiring_pauses_it_retries_with_backoff_and_resumes_with_a_new_token(make_rig, tmp_path,
                                                                                             monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_ENV, key)
    rig = make_rig(followers=TWO)
    f1 = rig.follower_ids["f1"]
    rig.exchange.expire_token(f1)  # what a 24-hour token looks like when its day is over
    refused_from = len(rig.exchange.socket_logins(f1))
    rig.exchange.faults.drop_sockets()  # every login from now on carries the dead token
    alert = wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "auth:f1")),
                       message="an alert naming f1")
    assert alert.level == "critical" and "f1" in alert.message

    order = rig.place(quantity=10)  # meanwhile: a recorded skip for f1, nothing placed for it
    assert rig.follower_copy(order, "f2")["quantity"] == 10
    assert rig.wait_skip(order, "f1").reason == "account_suspended"
    assert rig.follower_placements("f1") == 0

    # the dead token's logins are spaced by a growing backoff, not retried every second
    logins = wait_until(lambda: (lambda t: t if len(t) >= 4 else None)(rig.exchange.socket_logins(f1)[refused_from:]),
                        timeout=20, message="four login attempts")
    # (a gap is the backoff plus the refused attempt's own time, which can stretch under load:
    # asserted are the backoff's floors, 1 s then 2 s then 4 s, not that each gap beats the last)
    gaps = [b - a for a, b in zip(logins, logins[1:])]
    assert gaps[0] >= 0.8 and gaps[1] >= 1.8 and gaps[2] >= 3.6, gaps
    assert logins[3] - logins[0] >= 5.0, gaps

    # the user gives f1's new token to the running copier: it resumes without a restart
    new_token = rig.exchange.account(f1).access_token
    done = subprocess.run([sys.executable, "run.py", "--config", str(_operator_config(rig, tmp_path)), "token", "f1"],
                          cwd=ROOT, input=new_token + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert new_token not in done.stdout + done.stderr
    wait_until(lambda: rig.exchange.socket_count(f1) >= 1, timeout=15, message="f1's socket logged in again")
    wait_until(lambda: rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "auth_ok:f1")),
               message="f1 resumed")
    later = rig.place(quantity=20, price=1410.0)
    assert rig.follower_copy(later, "f1", timeout=15)["quantity"] == 10
    assert not rig.skips(later, "f1")


def _operator_config(rig, tmp_path: Path) -> Path:
    path = tmp_path / "operator.yaml"
    path.write_text(rig.config_yaml)
    return path


def test_token_command_refuses_a_token_the_broker_refuses(make_rig, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    rig = make_rig()
    done = subprocess.run([sys.executable, "run.py", "--config", str(_operator_config(rig, tmp_path)), "token", "f1"],
                          cwd=ROOT, input="not-a-working-token-42\n", capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "f1" in done.stderr and "DH-901" in done.stderr
    assert "not-a-working-token-42" not in done.stdout + done.stderr
    assert not Path(rig.config.storage.path).with_suffix(".tokens").exists()


# -- renewal ----------------------------------------------------------------------------------------
def test_renewed_token_survives_a_restart_stored_encrypted(tmp_path):
    ex = _paper()
    copier: subprocess.Popen | None = None
    key = Fernet.generate_key().decode()
    follower_id, config_token = "1200000001", "follower-secret-token-0001"
    config = config_dict(ex, tmp_path, TWO[:1], {"tokens": {"renew_every_minutes": 0.02}})  # every 1.2 s
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    stored = tmp_path / "copytrader.tokens"

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "run.py", "--config", str(path), "run", "--no-view"], cwd=ROOT,
                                env={**os.environ, KEY_ENV: key}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    def stop(proc: subprocess.Popen) -> str:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        return err

    try:
        copier = start()
        wait_until(lambda: stored.exists() and ex.account(follower_id).access_token != config_token, 20,
                   message="the follower's token renewed and stored")
        logs = stop(copier)
        current = ex.account(follower_id).access_token
        assert client(ex, follower_id, config_token).get_fund_limits()["status"] == "failure"  # the config's is dead
        assert ex.account(LEADER_ID).access_token == LEADER_TOKEN, "the leader is renewed only when configured"
        assert not [r for r in ex.request_log(LEADER_ID) if r["path"] == "/RenewToken"]
        data = stored.read_bytes()
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert current.encode() not in data and config_token.encode() not in data and b"1200000001" not in data
        assert current not in logs

        copier = start()  # same config, whose follower token is dead: the stored one is used
        wait_until(lambda: ex.socket_count(LEADER_ID) and ex.socket_count(follower_id), 20,
                   message="both sockets logged in after the restart")
        answer = client(ex, LEADER_ID, LEADER_TOKEN).place_order(
            security_id="2885", exchange_segment="NSE_EQ", transaction_type="BUY", quantity=10, order_type="LIMIT",
            product_type="INTRADAY", price=round(ex.price("2885") * 0.97, 1))
        assert answer["status"] == "success", answer
        wait_until(lambda: any(o["quantity"] == 5 for o in ex.orders(follower_id)), 20,
                   message="the leader's order copied after the restart")
        assert copier.poll() is None
    finally:
        if copier is not None and copier.poll() is None:
            stop(copier)
        ex.stop()


def test_leader_token_renewed_only_with_its_own_key(make_rig, monkeypatch):
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    rig = make_rig(config={"tokens": {"renew_every_minutes": 0.02}})
    f1 = rig.follower_ids["f1"]
    wait_until(lambda: sum(r["path"] == "/RenewToken" for r in rig.exchange.request_log(f1)) >= 2, 15,
               message="f1 renewed twice")
    assert not [r for r in rig.exchange.request_log(LEADER_ID) if r["path"] == "/RenewToken"]
    assert rig.exchange.account(LEADER_ID).access_token == LEADER_TOKEN


# -- configuration and the token file ---------------------------------------------------------------
def _raw(**tokens: object) -> dict:
    ex = SimpleNamespace(rest_url="http://127.0.0.1:1/v2", ws_url="ws://127.0.0.1:1")
    return config_dict(ex, Path("/tmp"), TWO[:1], {"tokens": tokens})  # type: ignore[arg-type]


def test_renewal_without_a_key_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    for tokens in ({"renew_every_minutes": 60}, {"renew_leader_every_minutes": 60}):
        with pytest.raises(ConfigError) as error:
            parse(_raw(**tokens))
        assert KEY_ENV in str(error.value) and next(iter(tokens)) in str(error.value)
    monkeypatch.setenv(KEY_ENV, "not-a-fernet-key")
    with pytest.raises(ConfigError, match=KEY_ENV):
        parse(_raw(renew_every_minutes=60))
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    config = parse(_raw(renew_every_minutes=60, renew_leader_every_minutes=720))
    assert config.tokens.renew_seconds == 3600 and config.tokens.leader_renew_seconds == 43200


def test_token_source_names_the_environment_variable(monkeypatch):
    monkeypatch.setenv("DHAN_F1_TOKEN", "from-env-123456")
    raw = _raw()
    raw["followers"][0]["access_token"] = "${DHAN_F1_TOKEN}"
    config = parse(raw, "my.yaml")
    assert config.followers[0].token_source == "environment variable DHAN_F1_TOKEN"
    assert config.leader.token_source == "config file my.yaml"


def test_token_file_is_encrypted_private_and_prefers_the_newest_token(tmp_path):
    from storage.tokens import TokenFile, TokenFileError, fingerprint

    key = Fernet.generate_key()
    path = tmp_path / "copytrader.tokens"
    tokens = TokenFile(path, key)
    tokens.save("1200000001", "f1", "renewed-token-AAAA", fingerprint("configured-token-1"))
    data = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # ciphertext is URL-safe base64: it may spell "f1" by chance, never a quoted JSON string
    assert b"renewed-token-AAAA" not in data and b'"f1"' not in data and b"1200000001" not in data
    with pytest.raises(ValueError):
        json.loads(data)
    # a renewal of the configured token is newer than it; a token put in the config since is newer still
    assert tokens.newest("1200000001", "configured-token-1") == "renewed-token-AAAA"
    assert tokens.newest("1200000001", "configured-token-2") is None
    with pytest.raises(TokenFileError, match="COPYTRADER_TOKEN_KEY"):
        TokenFile(path, Fernet.generate_key()).load()
    assert "renewed-token-AAAA" not in repr(tokens.load())


def test_auth_retry_delay_grows_and_is_capped():
    from actors.feed import AUTH_RETRY_MAX, auth_retry_delay

    delays = [auth_retry_delay(n) for n in range(1, 30)]
    assert delays[0] >= 1.0 and all(b >= a for a, b in zip(delays[:6], delays[1:6]))
    assert max(delays) <= AUTH_RETRY_MAX * 1.25 and AUTH_RETRY_MAX <= 120


def test_refused_login_frame_is_told_apart_from_other_frames():
    from broker.parsing import refused_login

    assert refused_login(b'{"Type": "error", "errorCode": "DH-901", "errorMessage": "invalid token"}') == "DH-901"
    assert refused_login('{"Type": "error", "errorCode": "DH-905", "errorMessage": "malformed login"}') is None
    assert refused_login(b'{"Type": "order_alert", "Data": {"OrderNo": "1", "ReasonDescription": "DH-901"}}') is None
    assert refused_login(b'{"errorCode": ') is None
