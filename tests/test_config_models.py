"""The config as nested, frozen models that mirror config.yaml: every key is read by its path in the
YAML, every error names that path and the rule, and nothing can change a loaded config."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from copier.config import ConfigError, load, parse
from tests.conftest import ROOT

SHIPPED = ROOT / "config.yaml"


def shipped() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


def _leaves(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    if isinstance(node, dict) and node and path[-1:] not in (("sizing",), ("risk",), ("copy_window",)):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return [leaf for i, value in enumerate(node) for leaf in _leaves(value, (*path, i))]
    return [(path, node)]


def test_every_key_of_the_shipped_config_is_read_by_its_path_in_the_yaml():
    config = load(SHIPPED)
    read = 0
    for path, value in _leaves(shipped()):
        node: Any = config
        for part in path:
            node = node[part] if isinstance(part, int) else getattr(node, part)
        if isinstance(value, (int, float, bool)) and path[-1] not in ("client_id",):
            assert node == value, path
        read += 1
    assert read > 30
    assert config.copy.max_modifications == 25 and config.broker.timeout_seconds == 5.0
    assert config.followers[1].risk.max_order_value == 200000 and config.followers[0].sizing.ratio == 0.5
    assert config.rate_limits.order_windows()[0] == (10, 1.0) and config.tokens.renew_seconds == 0


def test_a_loaded_config_cannot_be_changed():
    config = parse(shipped())
    for change in (lambda: setattr(config.copy, "max_modifications", 1000),
                   lambda: setattr(config, "mode", "live"),
                   lambda: setattr(config.followers[0], "access_token", "stolen"),
                   lambda: setattr(config.followers[1].risk, "max_order_value", None)):
        with pytest.raises(Exception, match="frozen|cannot assign"):
            change()
    assert config.copy.max_modifications == 25 and config.followers[1].risk.max_order_value == 200000


@pytest.mark.parametrize("section,key,value,expected", [
    ("followers", "ratio", "abc", "followers[1].sizing.ratio: must be a number > 0, got 'abc'"),
    ("copy", "max_delay_seconds", "5s", "copy.max_delay_seconds: must be a number >= 0, got '5s'"),
    ("broker", "max_attempts", "2", "broker.max_attempts: must be a whole number >= 1, got '2'"),
    ("rate_limits", "orders_per_day", 0, "rate_limits.orders_per_day: must be >= 1, got 0"),
    ("followers", "ratoi", 1, "followers[1].sizing.ratoi: unknown key"),
    ("metrics", "port", True, "metrics.port: must be a whole number >= 0, got True"),
])
def test_an_error_names_the_key_by_its_path_and_the_rule_it_broke(section, key, value, expected):
    raw = shipped()
    if section == "followers":
        raw["followers"][1]["sizing"][key] = value
    else:
        raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as error:
        parse(raw)
    assert str(error.value) == expected


def test_environment_variables_are_read_in_any_section_and_the_token_source_is_kept(monkeypatch):
    monkeypatch.setenv("CT_TEST_LEADER_TOKEN", "leader-token-from-env")
    monkeypatch.setenv("CT_TEST_BOT", "bot-token-from-env")
    raw = shipped()
    raw["leader"]["access_token"] = "${CT_TEST_LEADER_TOKEN}"
    raw["alerts"] = {"telegram_bot_token": "${CT_TEST_BOT}", "telegram_chat_id": "${CT_TEST_CHAT:-42}"}
    config = parse(raw, "my.yaml")
    assert config.leader.access_token == "leader-token-from-env"
    assert config.leader.token_source == "environment variable CT_TEST_LEADER_TOKEN"
    assert config.followers[0].token_source == "config file my.yaml"
    assert (config.alerts.telegram_bot_token, config.alerts.telegram_chat_id) == ("bot-token-from-env", "42")
    assert set(config.secrets()) >= {"leader-token-from-env", "bot-token-from-env"}
    assert "from-env" not in repr(config)


def test_relative_paths_are_relative_to_the_config_files_folder(tmp_path: Path):
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "master.csv").write_text((ROOT / "paper" / "data" / "instruments.csv").read_text())
    raw = shipped()
    raw["storage"] = {"path": "state/copytrader.db"}
    raw["instruments"] = {"master": "master.csv"}
    (folder / "my.yaml").write_text(yaml.safe_dump(raw))
    config = load(folder / "my.yaml")
    assert config.storage.path == str(folder / "state" / "copytrader.db")
    assert config.instruments.master == str(folder / "master.csv")
    assert config.source == str(folder / "my.yaml")


def test_a_config_with_200_followers_loads_with_each_follower_checked():
    raw = shipped()
    template = raw["followers"][1]
    raw["followers"] = [{**template, "name": f"f{i}", "client_id": str(1_200_000_000 + i)} for i in range(200)]
    config = parse(raw)
    assert len(config.followers) == 200 and config.followers[199].risk.max_open_positions == 10
    raw["followers"][150]["sizing"] = {"strategy": "fixed_lots", "lots": 0}
    with pytest.raises(ConfigError, match=r"^followers\[150\]\.sizing\.lots: must be >= 1, got 0$"):
        parse(raw)
