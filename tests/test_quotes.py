"""Pure pieces of valuing orders that name no price: Dhan's quote and profile answers, the quote
cache, when an order waits for a price, how a refusal says what valued the order, and the config."""
from __future__ import annotations

import pytest

from actors.quotes import QuoteBoard
from copier.config import ConfigError, parse
from broker.parsing import profile_from_dhan, quotes_from_ltp
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity
from trading.prices import LEADER_FILL, NONE, QUOTE, Quote, awaits_price, price_note

# Dhan's documented examples (dhanhq.co/docs/v2/market-quote, /docs/v2/authentication#user-profile)
LTP_ANSWER = {"data": {"NSE_EQ": {"11536": {"last_price": 4520}},
                       "NSE_FNO": {"49081": {"last_price": 368.15}, "49082": {"last_price": 694.35}}},
              "status": "success"}
PROFILE_ANSWER = {"dhanClientId": "1100003626", "tokenValidity": "30/03/2025 15:37",
                  "activeSegment": "Equity, Derivative, Currency, Commodity", "ddpi": "Active", "mtf": "Active",
                  "dataPlan": "Active", "dataValidity": "2024-12-05 09:37:52.0"}


def _terms(order_type: OrderType = OrderType.MARKET, price: float = 0.0, trigger: float = 0.0) -> OrderTerms:
    return OrderTerms("2885", "NSE_EQ", Side.BUY, Product.INTRADAY, order_type, Validity.DAY, 10, price, trigger)


def _update(status: OrderStatus = OrderStatus.PENDING, terms: OrderTerms | None = None, avg: float = 0.0,
            last_fill: float = 0.0) -> OrderUpdate:
    return OrderUpdate("1", status, terms or _terms(), filled_qty=10 if avg or last_fill else 0, avg_price=avg,
                       last_fill_price=last_fill)


def test_ltp_answer_becomes_quotes_by_segment_and_security():
    quotes = quotes_from_ltp(LTP_ANSWER)
    assert quotes == {("NSE_EQ", "11536"): Quote("NSE_EQ", "11536", 4520.0),
                      ("NSE_FNO", "49081"): Quote("NSE_FNO", "49081", 368.15),
                      ("NSE_FNO", "49082"): Quote("NSE_FNO", "49082", 694.35)}


@pytest.mark.parametrize("answer", [
    None, "", [], {"status": "success"}, {"data": []}, {"data": {"NSE_EQ": []}},
    {"data": {"NSE_EQ": {"1": {}}}}, {"data": {"NSE_EQ": {"1": {"last_price": "n/a"}}}},
    {"data": {"NSE_EQ": {"1": {"last_price": 0}}}}, {"data": {"NSE_EQ": {"1": {"last_price": float("nan")}}}},
    {"data": {"NSE_EQ": {"1": 12.5}}},
])
def test_an_unusable_ltp_answer_gives_no_quote_rather_than_an_error(answer):
    assert quotes_from_ltp(answer) == {}


def test_profile_answer_says_whether_the_data_plan_is_active():
    profile = profile_from_dhan(PROFILE_ANSWER, "fallback")
    assert (profile.client_id, profile.data_plan, profile.data_valid_until) == ("1100003626", True,
                                                                                "2024-12-05 09:37:52.0")
    assert profile_from_dhan({**PROFILE_ANSWER, "dataPlan": "Deactive"}, "x").data_plan is False
    assert profile_from_dhan({"tokenValidity": "30/03/2025 15:37"}, "x").data_plan is False  # absent: no plan
    assert profile_from_dhan("not a profile", "x") is None


def test_quote_board_serves_a_price_only_while_it_is_fresh():
    now = [100.0]
    board = QuoteBoard(cache_seconds=2.0, clock=lambda: now[0])
    assert board.fresh(("NSE_EQ", "2885")) is None
    board.put([Quote("NSE_EQ", "2885", 1502.4)])
    now[0] = 101.9
    assert board.fresh(("NSE_EQ", "2885")) == 1502.4
    assert board.fresh(("BSE_EQ", "2885")) is None  # security ids are unique per segment only
    now[0] = 102.0
    assert board.fresh(("NSE_EQ", "2885")) is None
    assert QuoteBoard(cache_seconds=0.0, clock=lambda: 5.0).fresh(("NSE_EQ", "2885")) is None


@pytest.mark.parametrize("update,waits", [
    (_update(), True),  # a MARKET order, open, not traded
    (_update(OrderStatus.TRANSIT), True),
    (_update(terms=_terms(OrderType.LIMIT, price=1500.0)), False),  # names its price
    (_update(terms=_terms(OrderType.STOP_LOSS_MARKET, trigger=1490.0)), False),  # executes near its trigger
    (_update(OrderStatus.TRADED, avg=1501.0), False),  # traded: its price is known
    (_update(OrderStatus.PART_TRADED, last_fill=1501.5), False),
    (_update(OrderStatus.CANCELLED), False),  # closed: not copied, nothing to wait for
    (_update(OrderStatus.REJECTED), False),
])
def test_only_an_open_order_that_names_no_price_and_has_not_traded_waits_for_one(update, waits):
    assert awaits_price(update) is waits


def test_a_refusal_says_what_valued_an_order_that_names_no_price():
    market = _terms()
    assert price_note(market, 2100.0, QUOTE, 2100.0) == "valued at the market quote"
    assert price_note(market, 2100.0, LEADER_FILL, 2100.0) == "valued at the leader's fill"
    assert price_note(market, 0.0, NONE, 0.0) == "no market quote and no fill of the leader's order to value it"
    assert price_note(market, 0.0, NONE, 1990.0) == "valued at an earlier order's price"
    assert price_note(_terms(OrderType.LIMIT, price=1500.0), 0.0, NONE, 1500.0) == ""


def _config(**sections) -> dict:
    raw = {"mode": "paper", "leader": {}, "followers": [{"name": "f1"}]}
    raw.update(sections)
    return raw


def test_quote_and_fill_wait_settings_have_safe_defaults_and_are_read():
    default = parse(_config())
    assert (default.quotes.cache_seconds, default.quotes.requests_per_second, default.copy.market_fill_wait_seconds) == \
        (2.0, 1, 2.0)
    set_ = parse(_config(quotes={"cache_seconds": 5, "requests_per_second": 2}, copy={"market_fill_wait_seconds": 0}))
    assert (set_.quotes.cache_seconds, set_.quotes.requests_per_second, set_.copy.market_fill_wait_seconds) == (5.0, 2, 0.0)


@pytest.mark.parametrize("sections,expected", [
    ({"quotes": {"cache_seconds": -1}}, "quotes.cache_seconds: must be >= 0"),
    ({"quotes": {"requests_per_second": 0}}, "quotes.requests_per_second: must be >= 1"),
    ({"quotes": {"requests_per_second": 1.5}}, "quotes.requests_per_second: must be a whole number"),
    ({"quotes": {"cache_secs": 1}}, "quotes.cache_secs: unknown key"),
    ({"quotes": "fast"}, "quotes: must be a mapping"),
    ({"copy": {"market_fill_wait_seconds": "2s"}}, "copy.market_fill_wait_seconds: must be a number"),
    ({"copy": {"market_fill_wait_seconds": -0.5}}, "copy.market_fill_wait_seconds: must be >= 0"),
])
def test_bad_quote_settings_are_refused_naming_the_key(sections, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
        parse(_config(**sections))
