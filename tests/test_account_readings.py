"""The broker adapter answers in the copier's own types (funds, positions, trades, margin), reads
each of Dhan's fields strictly at the edge, and is the only code, with the paper exchange, that
knows Dhan's field names."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from observability import metrics
from broker.errors import ErrorKind
from broker.gateway import DhanGateway
from broker.parsing import (MalformedMessage, book_fills_from_dhan, funds_from_dhan, margin_from_dhan, orders_from_book,
                            positions_from_dhan, trades_from_dhan)
from paper import AccountSpec, PaperExchange
from tests.conftest import RELIANCE, TCS, client, wait_until
from tests.faultproxy import NEVER
from trading.account import BookFill, Funds, Margin, Position, Trade, carried_in, held_at_book
from trading.orders import OrderStatus, OrderTerms, OrderType, OrderUpdate, Product, Side, Validity

ROOT = Path(__file__).resolve().parent.parent

# Dhan's field names, from its REST answers and bodies (camelCase: matched anywhere in a file, as
# no code of ours spells a name that way) and from the order-update socket (matched as quoted
# strings only, since some of them, such as OrderType, are also names of our own classes).
REST_FIELDS = (
    "orderId exchangeOrderId orderStatus correlationId transactionType exchangeSegment productType orderType "
    "securityId tradingSymbol disclosedQuantity triggerPrice afterMarketOrder amoTime boProfitValue "
    "boStopLossValue legName createTime updateTime exchangeTime remainingQuantity filledQty averageTradedPrice "
    "drvExpiryDate drvOptionType drvStrikePrice omsErrorCode omsErrorDescription dhanClientId availabelBalance "
    "availableBalance sodLimit utilizedAmount withdrawableBalance collateralAmount totalMargin insufficientBalance "
    "netQty buyAvg sellAvg buyQty sellQty costPrice positionType realizedProfit unrealizedProfit tradedQuantity "
    "tradedPrice exchangeTradeId killSwitchStatus errorType errorCode errorMessage dataPlan dataValidity "
    "tokenValidity accessToken orderFlag triggeredOrderId dayBuyQty daySellQty").split()
SOCKET_FIELDS = (
    "OrderNo ExchOrderNo CorrelationId SecurityId TxnType ProductName OrderType DiscQuantity RemainingQuantity "
    "TradedQty TriggerPrice TradedPrice AvgTradedPrice ReasonDescription LegNo OptType StrikePrice ExpiryDate "
    "LotSize OrderDateTime LastUpdatedTime OffMktFlag DisplayName LoginReq MsgCode ClientId UserType "
    "order_alert").split()
_DHAN_NAME = re.compile(r"\b(?:%s)\b|[\"'](?:%s)[\"']" % ("|".join(REST_FIELDS), "|".join(SOCKET_FIELDS)))

# Where Dhan's names belong: the adapter, the paper exchange, and what drives the paper exchange
# as a Dhan client would (the tests, and the benchmarks).
DHAN_SPEAKERS = ("broker", "paper", "tests", "bench")
# Files allowed Dhan's names while they are being converted (none now).
NOT_YET: tuple[str, ...] = ()


def test_no_dhan_field_name_outside_the_broker_adapter_and_the_paper_exchange():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in DHAN_SPEAKERS or relative.parts[0].startswith(".") or relative.as_posix() in NOT_YET:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _DHAN_NAME.finditer(line):
                found.append(f"{relative}:{number}: {match.group(0)}")
    assert not found, "Dhan's field names outside broker/ and paper/:\n" + "\n".join(found)


@pytest.fixture
def exchange():
    ex = PaperExchange(seed=3, price_walk=False, tick_seconds=0.05, session="open").start()
    yield ex
    ex.stop()


def test_the_gateway_answers_funds_positions_trades_orders_and_margin_in_the_copiers_own_types(exchange):
    exchange.add_account(AccountSpec("1100000002", "follower-secret-token", 500_000))
    dhan = client(exchange, "1100000002", "follower-secret-token")
    placed = dhan.place_order(security_id=RELIANCE, exchange_segment="NSE_EQ", transaction_type="BUY", quantity=10,
                              order_type="MARKET", product_type="INTRADAY", price=0)
    order_id = str(placed["data"]["orderId"])
    wait_until(lambda: exchange.positions("1100000002"), message="the order filled")
    gateway = DhanGateway("f1", "1100000002", "follower-secret-token", exchange.rest_url)

    funds = gateway.fund_limit()
    assert funds.ok and isinstance(funds.data, Funds)
    assert funds.data.start_of_day == 500_000 and 0 < funds.data.available < 500_000  # 20% of the value is used

    positions = gateway.positions()
    assert positions.ok and positions.data.unreadable == ()
    [held] = positions.data.entries
    assert isinstance(held, Position)
    assert (held.exchange_segment, held.security_id, held.product, held.net_qty) == ("NSE_EQ", RELIANCE,
                                                                                     Product.INTRADAY, 10)
    assert held.buy_avg > 0 and held.sell_avg == 0 and held.realised == 0
    assert (held.day_bought, held.day_sold) == (10, 0)

    trades = gateway.trades(order_id)
    assert trades.ok and trades.data.unreadable == ()
    [fill] = trades.data.entries
    assert isinstance(fill, Trade)
    assert (fill.order_id, fill.security_id, fill.side, fill.quantity, fill.price) == (order_id, RELIANCE, Side.BUY,
                                                                                       10, held.buy_avg)

    book = gateway.order_book()
    assert book.ok and book.data.unreadable == ()
    [order] = book.data.entries
    assert isinstance(order, OrderUpdate)
    assert (order.order_id, order.status, order.filled_qty, order.source) == (order_id, OrderStatus.TRADED, 10, "book")
    fills = gateway.book_fills()
    assert fills.ok and fills.data.entries == (BookFill(order_id, ("NSE_EQ", RELIANCE), 10),)

    terms = OrderTerms(TCS, "NSE_EQ", Side.BUY, Product.CNC, OrderType.LIMIT, Validity.DAY, 1000, 4000.0)
    margin = gateway.margin(terms, terms.price)
    assert margin.ok and isinstance(margin.data, Margin)
    assert margin.data.required == 4_000_000 and margin.data.shortfall == pytest.approx(4_000_000 - funds.data.available)


GOOD_POSITION = {"dhanClientId": "1100000002", "tradingSymbol": "RELIANCE", "securityId": "2885",
                 "positionType": "LONG", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY", "buyAvg": 1400.5,
                 "buyQty": 10, "sellAvg": 0.0, "sellQty": 0, "netQty": 10, "realizedProfit": 0.0,
                 "unrealizedProfit": -12.5}


@pytest.mark.parametrize("entry,reason", [
    ({**GOOD_POSITION, "netQty": "ten"}, "bad_type"),
    ({**GOOD_POSITION, "netQty": float("nan")}, "not_finite"),
    ({**GOOD_POSITION, "netQty": 12.5}, "out_of_range"),
    ({**GOOD_POSITION, "netQty": 10 ** 12}, "out_of_range"),
    ({**GOOD_POSITION, "netQty": None}, "missing_field"),
    ({**GOOD_POSITION, "securityId": "28 85"}, "bad_field"),
    ({**GOOD_POSITION, "exchangeSegment": "NYSE"}, "bad_field"),
    ({**GOOD_POSITION, "productType": "FOREVER"}, "bad_field"),
    ({**GOOD_POSITION, "realizedProfit": [1]}, "bad_type"),
    ({**GOOD_POSITION, "buyAvg": -3.0}, "out_of_range"),
    ("a position", "bad_shape"),
], ids=["quantity-text", "quantity-nan", "quantity-fraction", "quantity-huge", "quantity-missing", "security-id",
        "segment", "product", "profit-list", "negative-average", "not-an-object"])
def test_an_unreadable_position_is_left_out_with_its_reason_and_the_others_are_kept(entry, reason):
    short = {**GOOD_POSITION, "securityId": "11536", "netQty": -5, "buyQty": 0, "sellQty": 5, "buyAvg": 0.0,
             "sellAvg": 4000.0, "realizedProfit": 25.0}
    listing = positions_from_dhan([GOOD_POSITION, entry, short])
    assert listing.unreadable == (reason,)
    assert listing.entries == (
        Position("NSE_EQ", "2885", Product.INTRADAY, 10, buy_avg=1400.5, unrealised=-12.5),
        Position("NSE_EQ", "11536", Product.INTRADAY, -5, sell_avg=4000.0, realised=25.0, unrealised=-12.5))


@pytest.mark.parametrize("answer", [None, "", {"positions": []}, 7])
def test_a_positions_answer_that_is_not_a_list_is_unreadable(answer):
    with pytest.raises(MalformedMessage):
        positions_from_dhan(answer)


def test_funds_read_dhans_spelling_and_leave_out_what_it_did_not_send():
    assert funds_from_dhan({"availabelBalance": 98_440.0, "sodLimit": 113_642, "utilizedAmount": 15_202.0,
                            "withdrawableBalance": 98_310.0}) == Funds(98_440.0, 113_642.0, 15_202.0, 98_310.0)
    assert funds_from_dhan({"availableBalance": "1200.5"}) == Funds(1200.5)  # the corrected spelling, as text
    assert funds_from_dhan({"availabelBalance": -250.0}).available == -250.0  # over-used: negative


@pytest.mark.parametrize("answer", [
    None, [], "funds", {}, {"availabelBalance": None}, {"availabelBalance": "lots"},
    {"availabelBalance": float("inf")}, {"availabelBalance": 1e300}, {"availabelBalance": 10.0, "sodLimit": [5]},
], ids=["none", "list", "text", "empty", "null-balance", "text-balance", "infinite", "huge", "bad-limit"])
def test_an_unreadable_fund_limit_raises_malformed_never_anything_else(answer):
    with pytest.raises(MalformedMessage):
        funds_from_dhan(answer)


def test_an_unreadable_fund_limit_is_a_data_error_of_the_gateway(fault_proxy, exchange):
    exchange.add_account(AccountSpec("1100000002", "follower-secret-token", 500_000))
    proxy = fault_proxy(exchange.rest_url)
    proxy.respond("GET /fundlimit", 200, json.dumps({"availabelBalance": "lots"}), forward=NEVER, count=1)
    gateway = DhanGateway("f1", "1100000002", "follower-secret-token", proxy.url)
    answer = gateway.fund_limit()
    assert not answer.ok and answer.error.kind == ErrorKind.DATA and "availabelBalance" in answer.error.message
    assert gateway.fund_limit().data.available == 500_000  # the next answer, well formed, is read


def test_trades_and_margin_are_read_as_strictly():
    good = {"orderId": "52", "exchangeSegment": "NSE_EQ", "securityId": "2885", "transactionType": "SELL",
            "tradedQuantity": 3, "tradedPrice": 1401.25, "exchangeTime": "2026-11-27 10:15:00"}
    listing = trades_from_dhan([good, {**good, "tradedQuantity": 0}, {**good, "transactionType": "X"}])
    assert listing.entries == (Trade("52", "NSE_EQ", "2885", Side.SELL, 3, 1401.25, "2026-11-27 10:15:00"),)
    assert listing.unreadable == ("out_of_range", "bad_field")
    assert margin_from_dhan({"totalMargin": 2800.0, "availableBalance": 1000.0, "insufficientBalance": 1800.0,
                             "brokerage": 20}) == Margin(2800.0, 1000.0, 1800.0)
    with pytest.raises(MalformedMessage):
        margin_from_dhan({"totalMargin": "a lot", "insufficientBalance": 0})


def test_an_unreadable_order_book_entry_is_left_out_with_its_reason():
    good = {"orderId": "52", "orderStatus": "PENDING", "transactionType": "BUY", "exchangeSegment": "NSE_EQ",
            "productType": "INTRADAY", "orderType": "LIMIT", "validity": "DAY", "securityId": "2885", "quantity": 5,
            "price": 1400.0}
    book = orders_from_book([good, {**good, "quantity": "five"}, {**good, "orderId": "53"}], source="backfill")
    assert [(o.order_id, o.source) for o in book.entries] == [("52", "backfill"), ("53", "backfill")]
    assert book.unreadable == ("bad_type",)


def test_the_order_book_is_read_for_each_orders_fills_only_and_strictly():
    good = {"orderId": "52", "transactionType": "SELL", "exchangeSegment": "NSE_EQ", "securityId": "2885",
            "productType": "INTRADAY", "filledQty": 3, "orderStatus": "PART_TRADED"}
    entry = {**good, "orderId": "54", "transactionType": "BUY", "legName": "ENTRY_LEG", "filledQty": 5}
    listing = book_fills_from_dhan([good, {**good, "orderId": "53", "filledQty": None, "transactionType": "BUY"},
                                    {**good, "filledQty": -1}, {**good, "securityId": None},
                                    entry, {**entry, "legName": "TARGET_LEG", "transactionType": "SELL"}])
    key = ("NSE_EQ", "2885")
    assert listing.entries == (BookFill("52", key, -3), BookFill("53", key, 0),
                               BookFill("54", key, 5), BookFill("54:TARGET_LEG", key, -5))  # legs share an id
    assert listing.unreadable == ("out_of_range", "missing_field")


def test_held_at_book_is_what_was_carried_in_plus_what_the_book_has_filled():
    carried = Position("NSE_EQ", "2885", Product.CNC, 15, day_bought=10, day_sold=0)  # 5 carried in
    intraday = Position("NSE_EQ", "2885", Product.INTRADAY, -2, day_bought=0, day_sold=2)
    book = [BookFill("1", ("NSE_EQ", "2885"), 10), BookFill("2", ("NSE_EQ", "2885"), -2),
            BookFill("3", ("NSE_EQ", "2885"), 4), BookFill("4", ("NSE_EQ", TCS), -1)]  # 3 and 4 filled after
    assert carried_in([carried, intraday]) == {("NSE_EQ", "2885"): 5}
    assert held_at_book({("NSE_EQ", "2885"): 5}, book) == {("NSE_EQ", "2885"): 17, ("NSE_EQ", TCS): -1}
    assert carried_in([carried, Position("NSE_EQ", "2885", Product.CNC, 15)]) is None  # no day's fills given


def test_a_malformed_position_from_the_broker_is_counted_and_the_exit_sized_from_the_others(make_rig):
    rig = make_rig(proxied=["f1"])
    f1 = rig.follower_ids["f1"]
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    wait_until(lambda: [p["netQty"] for p in rig.exchange.positions(f1)] == [10], message="the follower holds 10")
    broken = {**rig.exchange.positions(f1)[0], "securityId": TCS, "netQty": "many"}
    body = json.dumps([*rig.exchange.positions(f1), broken])
    rig.proxies["f1"].respond("GET /positions", 200, body, forward=NEVER, count=1)
    before = metrics.MALFORMED_MESSAGES.labels("follower", "bad_type")._value.get()

    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")  # the leader closes its position
    assert rig.follower_copy(exit_order)["quantity"] == 10  # all of what the follower holds, not a reversal
    assert metrics.MALFORMED_MESSAGES.labels("follower", "bad_type")._value.get() == before + 1


def _holding_ten(rig, f1: str) -> None:
    entry = rig.place(order_type="MARKET", quantity=20)
    rig.wait_row(entry, lambda r: r.status == "TRADED", message="entry copied and filled")
    wait_until(lambda: [p["netQty"] for p in rig.exchange.positions(f1)] == [10], message="the follower holds 10")


def test_no_order_book_is_read_for_an_exit_no_fill_raced(make_rig):
    rig = make_rig(proxied=["f1"])
    f1 = rig.follower_ids["f1"]
    _holding_ten(rig, f1)
    books = len(rig.proxies["f1"].calls_to("GET /orders"))
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")  # the leader closes its position
    assert rig.follower_copy(exit_order)["quantity"] == 10
    assert len(rig.proxies["f1"].calls_to("GET /orders")) == books  # the positions were enough


def test_an_exit_is_sized_from_the_positions_as_read_when_they_leave_out_todays_fills(make_rig):
    rig = make_rig(proxied=["f1"])
    f1 = rig.follower_ids["f1"]
    _holding_ten(rig, f1)
    bare = [{k: v for k, v in p.items() if k not in ("dayBuyQty", "daySellQty")} for p in rig.exchange.positions(f1)]
    rig.proxies["f1"].respond("GET /positions", 200, json.dumps(bare), forward=NEVER)
    exit_order = rig.place(order_type="MARKET", quantity=20, side="SELL")
    assert rig.follower_copy(exit_order)["quantity"] == 10

