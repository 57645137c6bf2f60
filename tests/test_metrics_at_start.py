"""A freshly started copier exports a series of every metric family its dashboards and alert rules
use, for every account and actor kind, before anything has happened: no "No data" panel on a
healthy system, and increase() sees the first event of every series."""
from __future__ import annotations

import re
import sqlite3
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.commands import METRICS_URL_SETTING
from tests.conftest import ROOT
from tests.test_operator_errors import paper_config, paper_copier  # noqa: F401 (fixture)

GRAFANA = ROOT / "grafana"
METRIC = re.compile(r"\b(copytrader_[a-z0-9_]+)")
ACTOR_KINDS = {"sizing", "rate_limiter", "router", "forever", "reconciler", "kill_switch", "tokens", "feed", "order"}


def used_families() -> set[str]:
    """Every metric family named by a dashboard query or an alert rule (suffixes stripped)."""
    text = "".join(p.read_text() for p in (GRAFANA / "dashboards").glob("*.json"))
    text += (GRAFANA / "alerts.yml").read_text()
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in METRIC.findall(text)}


def scrape(db: Path) -> dict[str, list[dict[str, str]]]:
    """family name -> the label sets of its samples, from the copier's own /metrics endpoint."""
    with sqlite3.connect(db) as conn:
        url = conn.execute("select value from setting where key = ?", (METRICS_URL_SETTING,)).fetchone()[0]
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    families: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = [sample.labels for sample in family.samples]
    return families


def test_every_family_the_dashboards_use_has_a_series_at_start(paper_copier):  # noqa: F811
    config = yaml.safe_load(paper_copier.read_text())
    followers = [f["name"] for f in config["followers"]]
    families = scrape(Path(config["storage"]["path"]))
    missing = sorted(name for name in used_families() if not families.get(name))
    assert not missing, f"families without a series on a fresh copier: {missing}"

    without_every_follower = []
    for name, samples in families.items():
        if not name.startswith("copytrader_"):
            continue
        for label in ("follower", "account"):
            seen = {s[label] for s in samples if label in s}
            if seen and not set(followers) <= seen:
                without_every_follower.append(f"{name}{{{label}}}: {sorted(seen)}")
    assert not without_every_follower, "series missing for some followers:\n" + "\n".join(without_every_follower)
    assert {"leader", *followers} <= {s["account"] for s in families["copytrader_feed_reconnects_total"]}
    restarts = {s["kind"] for s in families["copytrader_actor_restarts_total"]}
    assert ACTOR_KINDS <= restarts, f"restart counters missing for {sorted(ACTOR_KINDS - restarts)}"
