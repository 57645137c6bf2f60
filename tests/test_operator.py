"""The kill switch and the operator commands (status, kill-switch, dlq), each run as
`python run.py COMMAND` against a copier running on the paper exchange."""
from __future__ import annotations

from observability import metrics
from app.commands import METRICS_URL_SETTING
from storage import models as m
from tests.conftest import run_command, start_rig, wait_until


def test_B_4_kill_switch_cancels_open_copies_blocks_new_ones_and_survives_restart(make_rig, tmp_path):
    rig = make_rig()
    open_copy = rig.place(quantity=10, price=1430.0)
    rig.follower_copy(open_copy)
    result = run_command(rig, tmp_path, "kill-switch", "on", "--reason", "drawdown check")
    assert result.returncode == 0, result.stderr
    rig.wait_copy(open_copy, lambda c: c["orderStatus"] == "CANCELLED", message="open copy cancelled")
    assert metrics.KILL_SWITCH._value.get() == 1
    blocked = rig.place(quantity=10)
    assert rig.wait_skip(blocked).reason == "kill_switch_on"
    assert rig.store.read(lambda: m.Alert.select().where(m.Alert.key == "kill_switch").count()) == 1

    rig.copier.stop()  # the state is stored: a restarted copier keeps the switch on
    start_rig(rig)
    still_blocked = rig.place(quantity=10)
    assert rig.wait_skip(still_blocked).reason == "kill_switch_on"

    assert run_command(rig, tmp_path, "kill-switch", "off").returncode == 0
    wait_until(lambda: metrics.KILL_SWITCH._value.get() == 0, message="switch seen off")
    assert rig.follower_copy(rig.place(quantity=10))["quantity"] == 5
    assert rig.follower_placements("f1") == 2  # the first copy and the last; nothing while it was on


def test_B_4_kill_switch_can_activate_the_brokers_own_switch(make_rig, tmp_path):
    rig = make_rig(config={"kill_switch": {"activate_broker": True}})
    run_command(rig, tmp_path, "kill-switch", "on")
    wait_until(lambda: any(r["path"].startswith("/killswitch") for r in rig.exchange.request_log(rig.follower_ids["f1"])),
               message="the follower's broker kill switch activated")


def test_status_command_shows_accounts_connections_and_state(make_rig, tmp_path):
    rig = make_rig()
    port = metrics.serve(0)
    rig.store.settings.set(METRICS_URL_SETTING, f"http://127.0.0.1:{port}/metrics")
    rig.follower_copy(rig.place(quantity=10, price=1430.0))
    result = run_command(rig, tmp_path, "status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "copier: running" in out
    assert "leader" in out and "f1" in out and "socket connected" in out
    assert "f1           1200000001   socket connected    open orders 1" in out
    assert "kill switch: off" in out and "dead letters: 0 unresolved" in out


def test_dlq_list_retry_and_drop(make_rig, tmp_path):
    rig = make_rig(config={"copy": {"sweep_seconds": 0.2}})
    follower = rig.follower_ids["f1"]
    rig.exchange.reject_next(follower, error_code="DH-905", message="Invalid disclosed quantity", count=2)
    first, second = rig.place(quantity=10), rig.place(quantity=12, price=1420.0)
    wait_until(lambda: rig.store.read(lambda: m.DeadLetter.select().count()) == 2, message="two dead letters")
    listing = run_command(rig, tmp_path, "dlq", "list")
    assert listing.returncode == 0 and listing.stdout.count("Invalid disclosed quantity") == 2
    letters = {l.leader_order_id: l.id for l in rig.store.read(lambda: list(m.DeadLetter.select()))}

    assert run_command(rig, tmp_path, "dlq", "retry", str(letters[first])).returncode == 0
    copy = rig.follower_copy(first)  # placed again, under the next generation's correlation id
    assert copy["quantity"] == 5 and rig.copy_row(first).generation == 1
    assert run_command(rig, tmp_path, "dlq", "drop", str(letters[second])).returncode == 0
    assert "the dead-letter queue is empty" in run_command(rig, tmp_path, "dlq", "list").stdout
    assert rig.copy_row(second).status == "REJECTED"  # dropped: left as the broker answered
    assert run_command(rig, tmp_path, "dlq", "retry", "999").returncode == 1


def test_orders_command_lists_leader_orders_beside_their_copies(make_rig, tmp_path):
    rig = make_rig(followers=[{"name": "f1", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}},
                              {"name": "f2", "sizing": {"strategy": "fixed_ratio", "ratio": 0.5}}])
    copied = rig.place(quantity=10, price=1430.0)
    skipped = rig.place(quantity=1, price=1431.0)
    for leader_id in (copied, skipped):
        rig.wait_row(leader_id, lambda r: r.status != "PENDING_PLACEMENT", "f2", message="decided")
    rig.wait_row(copied, lambda r: r.broker_order_id is not None, "f2", message="placed")
    out = run_command(rig, tmp_path, "orders", "--follower", "f2").stdout.splitlines()
    leader_line = next(i for i, line in enumerate(out) if line.startswith(copied))
    assert "RELIANCE" in out[leader_line] and "f2" in out[leader_line + 1] and "PENDING" in out[leader_line + 1]
    assert not any(line.strip().startswith("f1") for line in out)  # filtered to f2
    assert any("size_rounds_to_zero" in line for line in out)


def test_B_4_repeated_broker_failures_turn_the_kill_switch_on(make_rig):
    rig = make_rig(config={"kill_switch": {"after_failures": 3}})
    rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-905", message="Invalid order", count=3)
    for i in range(3):
        rig.place(quantity=10, price=1420.0 + i)
    wait_until(lambda: metrics.KILL_SWITCH._value.get() == 1, message="kill switch on")
    alert = rig.store.read(lambda: m.Alert.get_or_none(m.Alert.key == "kill_switch"))
    assert "3 broker failures" in alert.message
    assert rig.wait_skip(rig.place(quantity=10)).reason == "kill_switch_on"
