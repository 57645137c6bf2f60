"""Freeze quantities and slices, pure: the copier's table and its config overrides, how a copy is
cut into slices and re-sliced, and what the copy state machine makes of a slice."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from copier.config import ConfigError, parse
from trading import copy as c
from trading.copy_records import event_of, record
from trading.freeze import FreezeLimits, Slice, reslice, slice_sizes
from trading.instruments import Instrument
from trading.orders import OrderStatus as S
from trading.orders import OrderTerms, OrderType, Product, Side, Validity

NIFTY_CE = Instrument("45105", "NSE_FNO", "NIFTY-Dec2026-24000-CE", "OPTIDX", 75, 0.05, underlying="NIFTY")
BANKNIFTY_CE = Instrument("46201", "NSE_FNO", "BANKNIFTY-Dec2026-51000-CE", "OPTIDX", 35, 0.05, underlying="BANKNIFTY")
SENSEX_CE = Instrument("1", "BSE_FNO", "SENSEX-Dec2026-80000-CE", "OPTIDX", 20, 0.05, underlying="SENSEX")
STOCK_FUT = Instrument("2", "NSE_FNO", "RELIANCE-Dec2026-FUT", "FUTSTK", 500, 0.05, underlying="RELIANCE")
RELIANCE = Instrument("2885", "NSE_EQ", "RELIANCE", "EQUITY", 1, 0.05, underlying="RELIANCE")
T = OrderTerms("45105", "NSE_FNO", Side.BUY, Product.MARGIN, OrderType.LIMIT, Validity.DAY, 1800, price=60.0)


# -- the table -------------------------------------------------------------------------------------
@pytest.mark.parametrize("instrument,limit", [(NIFTY_CE, 1800), (BANKNIFTY_CE, 600), (SENSEX_CE, 1000),
                                              (STOCK_FUT, None), (RELIANCE, None)],
                         ids=["NIFTY", "BANKNIFTY", "SENSEX", "a stock future", "an equity"])
def test_the_shipped_table_holds_the_exchanges_index_limits_and_nothing_else(instrument, limit):
    assert FreezeLimits().limit(instrument) == limit


def test_a_slice_is_whole_lots_within_the_freeze_quantity():
    assert FreezeLimits().largest_slice(NIFTY_CE) == 1800  # 24 lots of 75
    assert FreezeLimits().largest_slice(BANKNIFTY_CE) == 595  # 17 lots of 35; 18 would be 630
    assert FreezeLimits().largest_slice(RELIANCE) is None


def test_overrides_replace_a_limit_add_one_and_lift_one():
    limits = FreezeLimits({("NSE_FNO", "NIFTY"): 900, ("NSE_FNO", "RELIANCE"): 2500, ("NSE_FNO", "BANKNIFTY"): None})
    assert (limits.limit(NIFTY_CE), limits.limit(STOCK_FUT), limits.limit(BANKNIFTY_CE)) == (900, 2500, None)
    assert limits.limit(SENSEX_CE) == 1000  # untouched


# -- slices ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantity,largest,sizes", [
    (3000, 1800, [1800, 1200]), (3600, 1800, [1800, 1800]), (1800, 1800, [1800]), (150, 1800, [150]),
    (1400, 595, [595, 595, 210]), (5000, None, [5000])])
def test_a_quantity_is_cut_into_the_largest_slices_the_remainder_last(quantity, largest, sizes):
    assert slice_sizes(quantity, largest) == sizes


@pytest.mark.parametrize("quantity,slices,expected,why", [
    (4200, [Slice(1800), Slice(1200)], [1800, 1800, 600], "more: the last slice grows, then one is added"),
    (1200, [Slice(1800), Slice(1200)], [1200, 0], "less: the first slice shrinks, the second is cancelled"),
    (3000, [Slice(1800), Slice(1200)], [1800, 1200], "the same quantity: the slices stay as they are"),
    (2400, [Slice(1800, 1800, live=False), Slice(1200)], [1800, 600],
     "a slice that traded keeps what it filled; the rest is re-cut from the live ones"),
    (1200, [Slice(1800, 1800, live=False), Slice(1200)], [1800, 0],
     "below what traded already: the live slice is cancelled"),
    (3000, [Slice(1800, 300), Slice(1200)], [1800, 1200], "a part-filled slice keeps its place"),
    (600, [Slice(1800, 900), Slice(1200)], [900, 0], "never below what a live slice filled: it is cut there"),
    (1500, [Slice(1800, 0, live=False), Slice(1200)], [1800, 1500],
     "a slice cancelled unfilled counts for nothing: the live one takes the whole quantity"),
    (2000, [Slice(1800, 0, live=False), Slice(1200)], [1800, 1800, 200],
     "the live slice grows no further than the largest slice; the rest is a new one"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_new_quantity_re_slices_the_copy_keeping_its_slices(quantity, slices, expected, why):
    assert reslice(quantity, slices, 1800) == expected


# -- a slice in the copy state machine ---------------------------------------------------------------
SLICE = c.start(c.Submitted("L1", "f1", T, part=1))


def test_a_slice_has_a_correlation_id_of_its_own_derived_from_its_copy():
    first = c.start(c.Submitted("L1", "f1", T))
    ids = {first.correlation_id, SLICE.correlation_id, c.start(c.Submitted("L1", "f1", T, part=2)).correlation_id}
    assert len(ids) == 3
    assert SLICE.correlation_id == c.correlation_id("L1", "f1", 0, 1)  # derived: found again after a restart
    assert first.correlation_id == c.correlation_id("L1", "f1")  # the copy's own, as before slicing
    assert (first.key, SLICE.key) == ("f1", "f1#1")
    assert all(len(cid) <= 25 for cid in ids)


def test_a_slice_placed_afresh_keeps_its_place_among_the_slices():
    refused = c.apply(c.apply(SLICE, c.PlaceSent()), c.PlacementRefused("DH-906 bad", "DH-906", "order"))
    retried = c.apply(refused, c.Retried())
    assert (retried.part, retried.generation, retried.status) == (1, 1, S.PENDING_PLACEMENT)
    assert retried.correlation_id == c.correlation_id("L1", "f1", 1, 1)
    assert retried.correlation_id not in (SLICE.correlation_id, c.correlation_id("L1", "f1", 1))


def test_a_slice_is_decided_like_any_copy():
    leader = c.Leader(open=True, seen_at=0.0)
    assert c.decide(SLICE, leader, 1.0) == c.Place(T)
    open_slice = c.apply(c.apply(SLICE, c.PlaceSent()), c.Placed("F2", S.PENDING, T))
    moved = c.apply(open_slice, c.TargetChanged(T.with_changes(price=61.0)))
    assert c.decide(moved, leader, 1.0) == c.Modify(T.with_changes(price=61.0))
    assert c.decide(c.apply(open_slice, c.CancelRequested("resliced")), leader, 1.0) == c.Cancel()


def test_a_slices_stored_records_fold_back_to_the_same_slice():
    kind, payload = record(None, c.Submitted("L1", "f1", T, part=2), c.start(c.Submitted("L1", "f1", T, part=2)))
    event = event_of(kind, payload, "L1", "f1")
    assert isinstance(event, c.Submitted) and event.part == 2
    assert c.start(event) == c.start(c.Submitted("L1", "f1", T, part=2))
    first = record(None, c.Submitted("L1", "f1", T), c.start(c.Submitted("L1", "f1", T)))
    assert first is not None and "part" not in first[1]  # records of unsliced copies are as before


def test_a_slice_belongs_to_its_own_order_only():
    placed = replace(SLICE, broker_order_id="F2", status=S.PENDING)
    assert c.belongs(placed, "F2", SLICE.correlation_id)
    assert not c.belongs(placed, "F2", c.correlation_id("L1", "f1"))  # the first slice's id


# -- config -----------------------------------------------------------------------------------------
def _config(tmp_path: Path, **extra: object) -> dict:
    return {"mode": "paper", "leader": {"client_id": "1", "access_token": "t"},
            "followers": [{"name": "f1", "client_id": "2", "access_token": "t"}],
            "storage": {"path": str(tmp_path / "db")}, **extra}


def test_freeze_limits_in_the_config_apply_to_both_fno_segments_unless_one_is_named(tmp_path):
    config = parse(_config(tmp_path, freeze_limits={"NIFTY": 900, "BSE_FNO:SENSEX": 500, "RELIANCE": None}))
    assert set(config.freeze_limits) == {("NSE_FNO", "NIFTY", 900), ("BSE_FNO", "NIFTY", 900),
                                         ("BSE_FNO", "SENSEX", 500), ("NSE_FNO", "RELIANCE", None),
                                         ("BSE_FNO", "RELIANCE", None)}
    assert config.copy.slice_above_freeze_limit is True
    assert parse(_config(tmp_path, copy={"slice_above_freeze_limit": False})).copy.slice_above_freeze_limit is False


@pytest.mark.parametrize("raw,message", [
    ({"NIFTY": 0}, "freeze_limits.NIFTY: must be a whole number of units >= 1"),
    ({"NIFTY": "many"}, "freeze_limits.NIFTY: must be a whole number of units >= 1"),
    ({"NIFTY": 1.5}, "freeze_limits.NIFTY: must be a whole number of units >= 1"),
    ({"NSE_EQ:NIFTY": 10}, "freeze_limits.NSE_EQ:NIFTY: the segment must be one of NSE_FNO, BSE_FNO"),
    ({"NIFTY 50": 10}, "freeze_limits.NIFTY 50: must name an underlying"),
    ([1800], "freeze_limits: must be a mapping"),
])
def test_a_bad_freeze_limit_is_refused_naming_the_key(tmp_path, raw, message):
    with pytest.raises(ConfigError, match=message):
        parse(_config(tmp_path, freeze_limits=raw))
