"""Observability: the shipped Prometheus config, alert rules and dashboards, checked by the real tools.

- `promtool` checks grafana/prometheus.yml and grafana/alerts.yml and runs grafana/alerts_test.yml;
- the dashboards and the README catalogue are what grafana/generate.py makes, and name only metrics
  of observability/metrics.py;
- a real `prometheus` scrapes `python run.py` (paper exchange + demo leader + copier, as a user
  starts it) on loopback; every panel query of every dashboard must evaluate through its HTTP API,
  the panels listed in MUST_HAVE_DATA must have data after the demo has copied orders, the alert
  rules must evaluate on the live data and stay quiet, and run.py must exit 0 on SIGTERM.

`prometheus` and `promtool` come from Debian's prometheus package (./test.sh installs it). When
they are missing these tests are skipped with a message saying how to get them, except under
CI=true, where they fail.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import free_port, wait_until
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

# (dashboard file, panel title): panels that must show data once the demo has copied orders.
MUST_HAVE_DATA = {
    ("overview.json", "Copier up"),
    ("overview.json", "Copier ready"),
    ("overview.json", "Feeds connected"),
    ("overview.json", "Kill switch"),
    ("overview.json", "Storage healthy"),
    ("overview.json", "Dead letters"),
    ("overview.json", "Leader events"),
    ("overview.json", "Follower orders by outcome"),
    ("overview.json", "Follower orders placed, by follower"),
    ("overview.json", "Inbound order updates"),
    ("overview.json", "Replication latency"),
    ("overview.json", "Broker call latency p99 by endpoint"),
    ("follower.json", "Orders placed"),
    ("follower.json", "Feed connected"),
    ("follower.json", "Operations by outcome"),
    ("follower.json", "Replication latency"),
    ("follower.json", "Rate limiter"),
    ("actors.json", "Order actors alive"),
    ("actors.json", "Mailbox depths"),
    ("actors.json", "Rate limiter tokens"),
    ("actors.json", "Rate limiter queue"),
    ("actors.json", "Inbound updates"),
}
RATE_INTERVAL = "1m"        # what $__rate_interval stands for in the queries sent to Prometheus
DEMO_TIMEOUT = 45.0         # the demo must have copied orders and filled the panels by then


# -- helpers ----------------------------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = (f"`{name}` is not installed: the observability tests need Debian's prometheus package "
                   f"(sudo apt-get install -y prometheus, or run ./test.sh, which installs it)")
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def run_tool(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([tool(args[0]), *args[1:]], cwd=GRAFANA, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def poll(predicate: Callable[[], Any], timeout: float, message: Callable[[], str] | str,
         interval: float = 0.2) -> Any:
    """Call `predicate` until it returns something truthy; fail with `message` after `timeout`."""
    return wait_until(predicate, timeout, interval, message)


def panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def load_dashboards() -> dict[str, dict]:
    assert DASHBOARDS, "no dashboards in grafana/dashboards"
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS}


def catalogue() -> list[dict]:
    sys.path.insert(0, str(GRAFANA))
    try:
        import generate
    finally:
        sys.path.remove(str(GRAFANA))
    return generate.catalogue()


def exported_names() -> set[str]:
    names = set()
    for metric in catalogue():
        names.add(metric["name"])
        names.update(metric["name"] + suffix for suffix in metric["suffixes"])
    return names


METRIC_NAME = re.compile(r"\b(copytrader_[a-z0-9_]+)")


# -- the shipped files ------------------------------------------------------------------------------
def test_promtool_checks_the_prometheus_config():
    done = run_tool("promtool", "check", "config", "prometheus.yml")
    assert "1 rule files found" in done.stdout + done.stderr


def test_promtool_checks_the_alert_rules():
    run_tool("promtool", "check", "rules", "alerts.yml")


def test_alert_rule_unit_tests_pass_and_cover_every_rule():
    run_tool("promtool", "test", "rules", "alerts_test.yml")
    rules = {rule["alert"] for group in yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]}
    cases = yaml.safe_load((GRAFANA / "alerts_test.yml").read_text())["tests"]
    tested = [check for case in cases for check in case.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in tested if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in tested if not c.get("exp_alerts")}
    assert rules - firing == set(), f"rules without a firing test: {sorted(rules - firing)}"
    assert rules - quiet == set(), f"rules without a not-firing test: {sorted(rules - quiet)}"


def test_dashboards_and_catalogue_table_are_generated_from_the_current_sources():
    done = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_queries_and_rules_name_only_catalogued_metrics():
    known = exported_names()
    unknown: dict[str, set[str]] = {}
    for name, dashboard in load_dashboards().items():
        queries = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
        queries += [v["definition"] for v in dashboard["templating"]["list"]]
        for query in queries:
            for metric in METRIC_NAME.findall(query):
                if metric not in known:
                    unknown.setdefault(name, set()).add(metric)
    for group in yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            for metric in METRIC_NAME.findall(rule["expr"]):
                if metric not in known:
                    unknown.setdefault("alerts.yml", set()).add(metric)
    assert not unknown, f"metrics not in observability/metrics.py: {unknown}"


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource():
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    assert {p.name for p in DASHBOARDS} == {"overview.json", "follower.json", "actors.json"}
    uids = set()
    for name, dashboard in load_dashboards().items():
        uids.add(dashboard["uid"])
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["targets"], f"{name}: panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == uid, f"{name}: panel {panel['title']!r} datasource"
            for t in panel["targets"]:
                assert t["datasource"]["uid"] == uid and t["expr"].strip()
    assert len(uids) == 3
    follower = load_dashboards()["follower.json"]["templating"]["list"]
    assert [v["name"] for v in follower] == ["follower"]
    assert follower[0]["definition"] == "label_values(copytrader_follower_orders_total, follower)"
    missing = {(d, t) for d, t in MUST_HAVE_DATA
               if t not in {p["title"] for p in panels(load_dashboards()[d])}}
    assert not missing, f"MUST_HAVE_DATA names panels that do not exist: {missing}"


# -- a real Prometheus scraping the demo ------------------------------------------------------------
@dataclass
class Demo:
    copier: subprocess.Popen
    prometheus: subprocess.Popen
    prometheus_url: str
    logs: Path

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.prometheus_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            return json.load(exc)

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / name
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in (("run.py", self.copier), ("prometheus", self.prometheus)):
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name + '.log')}")


def stop(proc: subprocess.Popen, timeout: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    prometheus_bin = tool("prometheus")
    tmp = tmp_path_factory.mktemp("observability")
    metrics_port, prometheus_port = free_port(), free_port()

    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    config["storage"]["path"] = str(tmp / "copytrader.db")
    config["metrics"] = {"host": "127.0.0.1", "port": metrics_port}
    config["instruments"]["master"] = str(ROOT / "paper" / "data" / "instruments.csv")
    config["paper"]["pace_seconds"] = 0.3
    (tmp / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    prometheus_config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(GRAFANA / "alerts.yml")],
        "scrape_configs": [{"job_name": "copytrader",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config), encoding="utf-8")
    run_tool("promtool", "check", "config", str(tmp / "prometheus.yml"))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp / "run.py.log", "wb") as copier_log, open(tmp / "prometheus.log", "wb") as prom_log:
        copier = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--config", str(tmp / "config.yaml"),
                                   "run", "--no-view"], cwd=ROOT, env=env, stdout=copier_log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        prometheus = subprocess.Popen([prometheus_bin, f"--config.file={tmp / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                                      cwd=tmp, stdout=prom_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    demo = Demo(copier, prometheus, f"http://127.0.0.1:{prometheus_port}", tmp)
    try:
        def ready() -> bool:
            demo.check_alive()
            try:
                with urllib.request.urlopen(f"{demo.prometheus_url}/-/ready", timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        poll(ready, 20, "Prometheus ready")
        yield demo
    finally:
        stop(copier, 10)
        stop(prometheus, 10)


def substitute(expr: str, follower: str) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL).replace("${follower}", follower)
            .replace("$follower", follower))


def every_query(follower: str) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, query) for every panel target, template variables substituted."""
    return [(name, panel["title"], substitute(t["expr"], follower))
            for name, dashboard in load_dashboards().items()
            for panel in panels(dashboard) for t in panel.get("targets", [])]


@pytest.fixture(scope="module")
def copied(demo: Demo) -> str:
    """Wait until the demo has copied orders and every must-have panel has data; returns a follower."""
    def copies_made() -> bool:
        demo.check_alive()
        return bool(demo.query("sum(copytrader_follower_orders_total) > 0").get("data", {}).get("result"))

    started = time.monotonic()
    poll(copies_made, DEMO_TIMEOUT, lambda: f"copies to be made\nrun.py log:\n{demo.log_tail('run.py.log')}")
    names = demo.api("label/follower/values", **{"match[]": "copytrader_follower_orders_total"})["data"]
    assert names, "label_values(copytrader_follower_orders_total, follower) is empty"
    follower = sorted(names)[0]

    def empty_must_haves() -> list[tuple[str, str, str]]:
        return [(d, title, q) for d, title, q in every_query(follower)
                if (d, title) in MUST_HAVE_DATA and not demo.query(q).get("data", {}).get("result")]

    left = DEMO_TIMEOUT - (time.monotonic() - started)
    poll(lambda: (demo.check_alive(), not empty_must_haves())[1], max(left, 5),
         lambda: "panels that must have data are empty:\n" + "\n".join(f"  {d} / {t}: {q}"
                                                                    for d, t, q in empty_must_haves()))
    return follower


def test_every_dashboard_query_evaluates_and_the_core_panels_have_data(demo: Demo, copied: str):
    invalid, empty = [], []
    for name, title, query in every_query(copied):
        answer = demo.query(query)
        if answer.get("status") != "success":
            invalid.append(f"{name} / {title}: {query}\n    {answer.get('errorType')}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            empty.append((name, title, query))
    assert not invalid, "queries Prometheus refused:\n" + "\n".join(invalid)
    must = [f"{n} / {t}: {q}" for n, t, q in empty if (n, t) in MUST_HAVE_DATA]
    assert not must, "panels that must have data are empty:\n" + "\n".join(must)
    # Panels that may well be empty after a short healthy demo (no errors, restarts, lag, ...).
    print("\npanels without data in the demo run:\n" + "\n".join(f"  {n} / {t}: {q}" for n, t, q in empty))


def test_alert_rules_evaluate_on_the_live_data(demo: Demo, copied: str):
    def rules() -> list[dict]:
        groups = demo.api("rules", type="alert")["data"]["groups"]
        found = [r for g in groups for r in g["rules"]]
        return found if found and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001") for r in found) else []

    evaluated = poll(rules, 15, "every alert rule to be evaluated")
    names = {r["name"] for r in evaluated}
    expected = {r["alert"] for g in yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"]
                for r in g["rules"]}
    assert names == expected
    broken = {r["name"]: r.get("lastError") for r in evaluated if r["health"] != "ok"}
    assert not broken, f"alert rules failing to evaluate: {broken}"


def test_a_healthy_demo_raises_no_alert(demo: Demo, copied: str):
    active = [f"{a['labels']['alertname']} {a['state']} {a['labels']}" for a in demo.api("alerts")["data"]["alerts"]]
    assert not active, "alerts active (pending or firing) during a healthy demo run:\n" + "\n".join(active)


def test_run_py_exits_0_within_10s_of_sigterm(demo: Demo, copied: str):
    demo.check_alive()
    started = time.monotonic()
    code = stop(demo.copier, 10)
    assert code is not None, f"run.py did not exit within 10s of SIGTERM:\n{demo.log_tail('run.py.log')}"
    assert code == 0, f"run.py exited with {code}:\n{demo.log_tail('run.py.log')}"
    assert time.monotonic() - started < 10


def test_a_remembered_series_is_the_metrics_own_and_counts_where_a_scrape_reads_it():
    from prometheus_client import REGISTRY

    from observability import metrics
    child = metrics.series(metrics.INBOUND_UPDATES, "follower", "remembered-series-test")
    assert child is metrics.INBOUND_UPDATES.labels("follower", "remembered-series-test")
    assert metrics.series(metrics.INBOUND_UPDATES, "follower", "remembered-series-test") is child
    child.inc(3)
    assert REGISTRY.get_sample_value("copytrader_inbound_updates_total",
                                     {"role": "follower", "source": "remembered-series-test"}) == 3
