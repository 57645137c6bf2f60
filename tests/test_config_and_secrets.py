"""An invalid config refuses to start, naming the key; access tokens never leak."""
from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from observability import logs
from copier.config import ConfigError, load, parse
from tests.conftest import LEADER_TOKEN, ROOT, wait_until

BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c["followers"][0]["sizing"].update(ratio="half"), "followers[0].sizing.ratio: must be a number"),
    (lambda c: c["followers"][1]["sizing"].update(strategy="martingale"), "followers[1].sizing.strategy: must be one of"),
    (lambda c: c.update(mode="demo"), "mode: must be 'live' or 'paper'"),
    (lambda c: c.update(followers=[]), "followers: must be a non-empty list"),
    (lambda c: c["metrics"].update(port=70000), "metrics.port: must be <= 65535"),
    (lambda c: c.update(folowers=[]), "folowers: unknown key"),
    (lambda c: c["market_hours"].update(enforce="yes"), "market_hours.enforce: must be true or false"),
    (lambda c: (c.update(mode="live"), c["leader"].update(access_token="${NOT_SET_ANYWHERE_42}")),
     "leader.access_token: environment variable NOT_SET_ANYWHERE_42 is not set"),
    (lambda c: c["followers"][0].update(api_base_url="ftp://x"), "followers[0].api_base_url: must start with"),
    (lambda c: c["followers"][1].update(name="f1"), "followers[1].name: 'f1' is used twice"),
    (lambda c: c["followers"][0].update(filters={"deny_symbols": "RELIANCE"}),
     "followers[0].filters.deny_symbols: must be a list of names"),
    (lambda c: c["followers"][0].update(risk={"max_order_valu": 1}), "followers[0].risk: unknown keys"),
])
def test_B_7_invalid_config_names_the_key(tmp_path, mutate, expected):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert expected in str(error.value)


def test_B_7_run_refuses_to_start_with_an_invalid_config(tmp_path):
    path = _write(tmp_path, lambda c: c["followers"][0]["sizing"].update(ratio=-1))
    result = subprocess.run([sys.executable, "run.py", "--config", str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "followers[0].sizing.ratio: must be > 0" in result.stderr


def test_B_7_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("mode: paper\nleader: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(path)


def test_env_interpolation_reads_tokens_from_the_environment(monkeypatch):
    monkeypatch.setenv("DHAN_F1_TOKEN", "from-env-123456")
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["followers"][0]["access_token"] = "${DHAN_F1_TOKEN}"
    assert parse(raw).followers[0].access_token == "from-env-123456"


def test_B_8_tokens_never_appear_in_logs_database_metrics_or_errors(make_rig):
    stream = io.StringIO()
    level = logging.getLogger().level
    handler = logs.setup("DEBUG", json_lines=True, stream=stream)
    rig = make_rig()
    try:
        for token in rig.config.secrets():
            logs.register_secret(token)
        leader_id = rig.place(quantity=10)
        rig.follower_copy(leader_id)
        rig.exchange.faults.drop_sockets()  # reconnects re-send the login frame that carries tokens
        wait_until(lambda: rig.exchange.socket_count() >= 2, message="sockets back")
        logging.getLogger("test").error("login failed with %s", {"Token": LEADER_TOKEN})  # a careless caller
        rig.copier.stop()
        rig.store.close()
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    texts = {
        "logs": stream.getvalue(),
        "metrics": generate_latest(REGISTRY).decode(),
        "database": b"".join(p.read_bytes() for p in Path(rig.config.storage.path).parent.glob("copytrader.db*")).decode("latin-1"),
        "config repr": repr(rig.config),
    }
    assert "login failed" in texts["logs"]
    for token in rig.config.secrets():
        for where, text in texts.items():
            assert token not in text, f"a token appears in the {where}"
