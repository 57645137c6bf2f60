"""Secure by default: plain-text URLs that leave the machine, and a metrics endpoint or paper
exchange control open beyond it, are refused unless the user says so.

Loopback addresses are allowed over http:// and ws:// without `allow_insecure`: that traffic
never leaves the machine, and whoever can read it there can read the config and its tokens too.
(The test suite's own paper exchanges are on 127.0.0.1.)"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from copier.config import ConfigError, parse
from tests.conftest import ROOT, start_paper_process, wait_until
from tests.test_operator_errors import paper_config


def live_config(**changes) -> dict:
    raw = {"mode": "live",
           "leader": {"client_id": "1100000001", "access_token": "leader-token-0001"},
           "followers": [{"name": "f1", "client_id": "1200000001", "access_token": "follower-token-0001"}],
           "instruments": {"master": str(ROOT / "paper" / "data" / "instruments.csv")}}
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return raw


INSECURE = [
    ({"leader": {"api_base_url": "http://api.example.com/v2"}}, "leader.api_base_url"),
    ({"leader": {"order_update_url": "ws://api-order-update.example.com"}}, "leader.order_update_url"),
    ({"followers": [{"name": "f1", "client_id": "1200000001", "access_token": "follower-token-0001",
                     "api_base_url": "http://10.0.0.5:8080/v2"}]}, "followers[0].api_base_url"),
    ({"instruments": {"master": "http://images.example.com/api-scrip-master.csv"}}, "instruments.master"),
    ({"metrics": {"host": "0.0.0.0"}}, "metrics.host"),
]


@pytest.mark.parametrize("changes,key", INSECURE)
def test_insecure_settings_are_refused_naming_the_key(changes, key):
    with pytest.raises(ConfigError) as error:
        parse(live_config(**changes))
    assert str(error.value).startswith(f"{key}:") and "allow_insecure: true" in str(error.value)


@pytest.mark.parametrize("changes,key", INSECURE)
def test_allow_insecure_accepts_them(changes, key):
    config = parse(live_config(allow_insecure=True, **changes))
    assert config.allow_insecure and key in config.insecure_settings()


def test_loopback_urls_need_no_allow_insecure():
    config = parse(live_config(leader={"api_base_url": "http://127.0.0.1:8000/v2",
                                       "order_update_url": "ws://localhost:8001"},
                               metrics={"host": "::1"}))
    assert config.insecure_settings() == {}


def test_allow_insecure_is_warned_about_at_every_start(tmp_path):
    config = paper_config(tmp_path, lambda c: c.update(allow_insecure=True))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "run.py", "--config", str(config), "run", "--no-view"], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def warned() -> dict | None:
            assert proc.poll() is None, log.read_text()
            for line in log.read_text().splitlines():
                if line.startswith("{") and "allow_insecure" in line:
                    return json.loads(line)
            return None

        record = wait_until(warned, 30, message="a warning about allow_insecure")
        assert record["level"] == "warning"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_paper_exchange_beyond_loopback_needs_a_control_token():
    refused = subprocess.run([sys.executable, "-m", "paper", "--host", "0.0.0.0"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2 and "--control-token" in refused.stderr, refused.stderr


def control(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"{url}/price", data=json.dumps({"security_id": "2885"}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_paper_exchange_control_beyond_loopback_answers_only_with_the_token():
    proc, urls, _accounts = start_paper_process("--host", "0.0.0.0", "--control-token", "control-secret-1234")
    try:
        url = urls["CONTROL"].replace("0.0.0.0", "127.0.0.1")
        assert control(url) == 401
        assert control(url, "wrong-token") == 401
        assert control(url, "control-secret-1234") == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_paper_exchange_control_on_loopback_needs_no_token():
    proc, urls, _accounts = start_paper_process()
    try:
        assert control(urls["CONTROL"]) == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_shipped_config_and_readme_document_allow_insecure_and_the_log_level():
    readme = (ROOT / "README.md").read_text()
    assert "`allow_insecure`" in readme and "`logging.level`" in readme
    assert yaml.safe_load((ROOT / "config.yaml").read_text()).get("allow_insecure", False) is False
