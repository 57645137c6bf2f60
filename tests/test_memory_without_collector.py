"""A finished leader order gives its memory back at once: nothing the copier builds for it holds a
reference cycle, so it is freed when its order actor retires, not at the garbage collector's next
full collection, which at a hundred followers walked hundreds of thousands of objects with every
thread stopped (bench/results/README.md); and copying a burst allocates too little that outlives it
for the collector to run at all."""
from __future__ import annotations

import gc

from actors.order import OrderActor
from supervisors.pool import ActorPool, PooledActor
from supervisors.address import Address
from tests.conftest import RELIANCE, wait_until


def _order_actors(leader_order_id: str) -> list[OrderActor]:
    return [o for o in gc.get_objects() if isinstance(o, OrderActor) and o.leader_order_id == leader_order_id]


def test_a_traded_order_s_actor_is_freed_without_the_garbage_collector(make_rig):
    rig = make_rig(followers=[{"name": f"f{i}", "sizing": {"strategy": "fixed_ratio", "ratio": 1}}
                              for i in range(1, 4)])
    gc.collect()
    gc.disable()
    try:
        through_the_market = round(rig.exchange.price(RELIANCE) * 1.03, 1)
        leader_order_id = rig.place(quantity=2, price=through_the_market)
        for follower in ("f1", "f2", "f3"):
            rig.wait_row(leader_order_id, lambda row: row.status == "TRADED", follower=follower,
                         message="traded")
        assert [entry["orderStatus"] for entry in (rig.follower_order_now(leader_order_id, f)
                                                   for f in ("f1", "f2", "f3"))] == ["TRADED"] * 3
        wait_until(lambda: not _order_actors(leader_order_id), 10,
                   message=f"the order actor of {leader_order_id} freed once its order is done")
    finally:
        gc.enable()


class _Holder(PooledActor):
    pass


def test_a_stopped_pooled_actor_is_freed_without_the_garbage_collector():
    pool = ActorPool(1, name="memory").start()
    gc.collect()
    gc.disable()
    try:
        address = Address("holder")
        ref = pool.spawn(_Holder(address, None))
        address.bind(ref)
        assert ref.ask("anything") is None
        ref.stop()
        address.bind(None)
        del ref
        wait_until(lambda: not [o for o in gc.get_objects() if isinstance(o, _Holder)], 5,
                   message="the stopped actor freed")
    finally:
        gc.enable()
        pool.stop()


def test_copying_a_burst_to_five_followers_runs_no_garbage_collection(make_rig):
    rig = make_rig(followers=[{"name": f"f{i}", "sizing": {"strategy": "fixed_ratio", "ratio": 1}}
                              for i in range(1, 6)])
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        through_the_market = round(rig.exchange.price(RELIANCE) * 1.03, 1)
        leader_order_ids = [rig.place(quantity=1 + i % 3, price=through_the_market) for i in range(10)]
        for leader_order_id in leader_order_ids:
            for follower in ("f1", "f2", "f3", "f4", "f5"):
                rig.wait_row(leader_order_id, lambda row: row.status == "TRADED", follower=follower,
                             message="traded")
    finally:
        gc.callbacks.remove(count)
    assert sum(1 for f in ("f1", "f2", "f3", "f4", "f5") for _ in rig.follower_book(f)) == 50
    assert collections == [], f"garbage collections (by generation) while copying: {collections}"
