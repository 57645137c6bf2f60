"""The figures behind copier/config.py's library (pydantic v2) and broker/parsing.py's hand-written
frame checks: import cost, config load time, error messages, and the per-frame cost and strictness
of validating Dhan's order-update frames with pydantic instead.

    python bench/config_bench.py [--repeat 7]

msgspec is measured too when it is installed (`pip install msgspec`; the project does not need
it): the same config schema as msgspec Structs, for load time and its error message.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator  # noqa: E402

from broker import codes, parsing  # noqa: E402
from broker.parsing import (MAX_CORRELATION_ID, MAX_ID, MAX_PRICE, MAX_QUANTITY, MAX_SEQUENCE,  # noqa: E402
                            MAX_TEXT, MalformedMessage, decode_socket_message, from_socket)
from copier.config import ConfigError, parse  # noqa: E402
from tests.frames import bad_frames, order_alert_text  # noqa: E402
from trading.orders import OrderTerms, OrderUpdate  # noqa: E402

try:
    import msgspec
except ImportError:  # measured only where it is installed
    msgspec = None  # type: ignore[assignment]


def best(fn: Callable[[], Any], repeat: int, number: int) -> float:
    """Seconds per call: the best of `repeat` runs of `number` calls (the least disturbed by load)."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number)
    return min(runs)


# -- import cost ------------------------------------------------------------------------------------
def import_ms(statement: str, repeat: int) -> float:
    """Median wall time of a fresh interpreter running `statement`, less one running nothing."""
    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        return time.perf_counter() - start
    base = statistics.median(run("pass") for _ in range(repeat))
    return (statistics.median(run(statement) for _ in range(repeat)) - base) * 1000


# -- config load ------------------------------------------------------------------------------------
def shipped() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def many_followers(count: int) -> dict:
    raw = shipped()
    template = raw["followers"][1]
    raw["followers"] = [{**copy.deepcopy(template), "name": f"f{i}", "client_id": str(1_200_000_000 + i),
                         "filters": {"deny_symbols": ["IDEA", "YESBANK"]},
                         "copy_window": {"start": "09:20", "end": "15:10"}} for i in range(count)]
    return raw


def msgspec_schema() -> Any:
    """The same keys and rules, as far as msgspec says them by itself (types, bounds, unknown keys,
    frozen); built with defstruct, since its class syntax cannot see this function's names."""
    Meta = msgspec.Meta
    Pos = Annotated[float, Meta(gt=0)]
    NonNeg = Annotated[float, Meta(ge=0)]
    One = Annotated[int, Meta(ge=1)]
    Clock = Annotated[str, Meta(pattern=r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")]
    Names = frozenset[str]

    def S(title: str, /, **fields: tuple[Any, Any]) -> tuple[Any, Any]:  # noqa: N802
        """A section's type, and its default: itself with every key defaulted (None: required)."""
        kind = msgspec.defstruct(title, [(k, t) if d is ... else (k, t, d) for k, (t, d) in fields.items()],
                                 frozen=True, forbid_unknown_fields=True, kw_only=True)
        return kind, (kind() if all(d is not ... for _t, d in fields.values()) else None)

    account = dict(client_id=(str, ""), access_token=(str, ""), api_base_url=(str, "https://api.dhan.co/v2"),
                   order_update_url=(str, "wss://api-order-update.dhan.co"))
    follower, _ = S("Follower", name=(Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")], ...), **account,
                    sizing=S("Sizing", strategy=(Literal["fixed_ratio", "capital_proportional", "fixed_lots",
                                                         "risk_based"], "fixed_ratio"),
                             ratio=(Pos, 1.0), lots=(One, 1), risk_per_trade=(NonNeg, 0.0), stop_loss_pct=(Pos, 1.0),
                             max_quantity=(One | None, None), round_up_to_one_lot=(bool, False)),
                    risk=S("Risk", max_order_value=(Pos | None, None), max_open_positions=(One | None, None),
                           max_quantity_per_instrument=(One | None, None), max_orders_per_minute=(One | None, None),
                           max_capital_share_per_instrument=(Annotated[float, Meta(gt=0, le=1)] | None, None),
                           max_daily_loss=(Pos | None, None)),
                    filters=S("Filters", options_only=(bool, False), **{k: (Names, frozenset()) for k in (
                        "allow_segments", "deny_segments", "allow_instruments", "deny_instruments",
                        "allow_symbols", "deny_symbols")}),
                    copy_window=(S("Window", start=(Clock, ...), end=(Clock, ...))[0] | None, None),
                    funds=(NonNeg, 500_000.0))
    config, _ = S(
        "Config", mode=(Literal["live", "paper"], "live"), leader=S("Leader", **account),
        followers=(Annotated[tuple[follower, ...], Meta(min_length=1)], ...),
        instruments=S("Instruments", master=(str, "")), market_hours=S("MarketHours", enforce=(bool, True)),
        storage=S("Storage", path=(str, "data/copytrader.db"), retry_seconds=(Pos, 10.0)),
        metrics=S("Metrics", port=(Annotated[int, Meta(ge=0, le=65535)], 9108), host=(str, "127.0.0.1")),
        rate_limits=S("RateLimits", orders_per_second=(One, 10), orders_per_minute=(One, 250),
                      orders_per_hour=(One, 1000), orders_per_day=(One, 7000), data_per_second=(One, 20)),
        copy=S("Copy", max_modifications=(One, 25), lag_alert_seconds=(NonNeg, 30.0),
               market_fill_wait_seconds=(NonNeg, 2.0), max_delay_seconds=(NonNeg, 5.0)),
        quotes=S("Quotes", cache_seconds=(NonNeg, 2.0), requests_per_second=(One, 1)),
        reconcile=S("Reconcile", interval_seconds=(NonNeg, 60.0), repair=(bool, True)),
        paper=S("Paper", seed=(int, 7), leader_bot=(bool, True), pace_seconds=(Pos, 1.5)))
    return config


# -- frames: the pydantic model of an order_alert -----------------------------------------------------
IdT = Annotated[str, Field(max_length=MAX_ID, pattern=r"^[A-Za-z0-9_-]+$")]
PriceT = Annotated[float, Field(ge=0, lt=MAX_PRICE, allow_inf_nan=False)]
CountT = Annotated[int, Field(ge=0, lt=MAX_QUANTITY)]
CodeT = Annotated[str, Field(max_length=40)]
TextT = Annotated[str, Field(max_length=MAX_TEXT)]


class AlertData(BaseModel):
    """What broker/parsing.py checks by hand, said as a model (lax: Dhan sends numbers as text)."""

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True, extra="ignore")
    Exchange: CodeT
    Segment: CodeT
    SecurityId: IdT
    TxnType: CodeT
    Product: CodeT
    OrderType: CodeT
    Validity: CodeT = "DAY"
    Quantity: Annotated[int, Field(ge=1, lt=MAX_QUANTITY)]
    Price: PriceT | None = None
    TriggerPrice: PriceT | None = None
    DiscQuantity: CountT | Literal[""] | None = None
    OffMktFlag: CodeT | bool = "0"
    OrderNo: IdT
    Status: CodeT
    TradedQty: CountT | Literal[""] | None = None
    AvgTradedPrice: PriceT | None = None
    TradedPrice: PriceT | None = None
    CorrelationId: Annotated[str, Field(max_length=MAX_CORRELATION_ID, pattern=r"^[A-Za-z0-9_-]*$")] | None = None
    Symbol: TextT | None = None
    ReasonDescription: TextT | None = None
    OrderDateTime: Annotated[str, Field(max_length=64)] | None = None
    LastUpdatedTime: Annotated[str, Field(max_length=64)] | None = None
    Sequence: Annotated[int, Field(ge=0, lt=MAX_SEQUENCE)] | Literal[""] | None = None
    LotSize: CountT | Literal[""] | None = None

    @field_validator("Quantity", "TradedQty", "DiscQuantity", "LotSize", "Sequence", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("a bool is not a number")
        return value


class Frame(BaseModel):
    model_config = ConfigDict(extra="ignore")
    Type: str
    Data: AlertData | None = None


class StrictAlertData(AlertData):
    """AlertData with broker/parsing.py's number check run before pydantic's on every number: what
    it takes to give tests/test_poison_input.py's reasons (a bool is no price, "inf" is not finite,
    1e30 is out of range rather than of the wrong type)."""

    @field_validator("Quantity", "TradedQty", "DiscQuantity", "LotSize", "Sequence", "Price", "TriggerPrice",
                     "AvgTradedPrice", "TradedPrice", mode="before")
    @classmethod
    def _a_finite_number(cls, value: Any) -> Any:
        return value if value is None or value == "" else parsing._number(value, "field")


class StrictFrame(Frame):
    Data: StrictAlertData | None = None


REASONS = {"finite_number": "not_finite", "greater_than_equal": "out_of_range", "less_than": "out_of_range",
           "greater_than": "out_of_range", "int_from_float": "out_of_range", "string_too_long": "out_of_range",
           "missing": "missing_field", "string_pattern_mismatch": "bad_field", "model_type": "bad_shape",
           "model_attributes_type": "bad_shape", "json_invalid": "bad_json", "json_type": "bad_shape"}


def pydantic_frame(raw: str | bytes, max_bytes: int = 1024 * 1024, model: type[Frame] = Frame) -> OrderUpdate | None:
    """The same contract as decode_socket_message + from_socket, validation by pydantic."""
    if len(raw) > max_bytes:
        raise MalformedMessage("too_large", f"{len(raw)} bytes")
    try:
        frame = model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        kind = error["type"]
        if kind == "value_error" and isinstance(error.get("ctx", {}).get("error"), MalformedMessage):
            raise error["ctx"]["error"] from None
        if kind == "json_invalid" and "recursion" in error["msg"]:
            raise MalformedMessage("too_deep", error["msg"]) from None
        if kind == "json_invalid" and "number out of range" in error["msg"]:
            raise MalformedMessage("out_of_range", error["msg"]) from None
        raise MalformedMessage(REASONS.get(kind, "bad_type"), f"{error['loc']}: {error['msg']}") from None
    if frame.Type != "order_alert":
        return None
    d = frame.Data
    if d is None:
        raise MalformedMessage("bad_shape", "order_alert without a Data object")
    segment = codes.SEGMENT.get((d.Exchange.upper(), d.Segment.upper()))
    if segment is None:
        raise MalformedMessage("bad_field", "unknown Exchange/Segment")
    try:
        terms = OrderTerms(security_id=d.SecurityId, exchange_segment=segment,
                           side=codes.lookup(codes.SIDE, d.TxnType, "TxnType"),
                           product=codes.lookup(codes.PRODUCT, d.Product, "Product"),
                           order_type=codes.lookup(codes.ORDER_TYPE, d.OrderType, "OrderType"),
                           validity=codes.lookup(codes.VALIDITY, d.Validity or "DAY", "Validity"),
                           quantity=d.Quantity, price=d.Price or 0.0, trigger_price=d.TriggerPrice or 0.0,
                           disclosed_qty=d.DiscQuantity or 0, amo=False, amo_time=None)
        status = codes.status(d.Status)
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc)) from None
    return OrderUpdate(order_id=d.OrderNo, status=status, terms=terms, filled_qty=d.TradedQty or 0,
                       avg_price=d.AvgTradedPrice or 0.0, last_fill_price=d.TradedPrice or 0.0,
                       correlation_id=d.CorrelationId or None, symbol=d.Symbol or "",
                       reason=d.ReasonDescription or "", created_at=d.OrderDateTime or "",
                       updated_at=d.LastUpdatedTime or "", sequence=d.Sequence or None,
                       lot_size=d.LotSize or None)


def strict_pydantic_frame(raw: str | bytes, max_bytes: int = 1024 * 1024) -> OrderUpdate | None:
    return pydantic_frame(raw, max_bytes, StrictFrame)


def hand_written(raw: str | bytes, max_bytes: int = 1024 * 1024) -> OrderUpdate | None:
    data = decode_socket_message(raw, max_bytes)
    return None if data is None else from_socket(data)


def reason(parse_frame: Callable[[str], Any], text: str | bytes) -> str:
    try:
        parse_frame(text)
    except MalformedMessage as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - an escape is what this counts
        return f"ESCAPED {type(exc).__name__}"
    return "accepted"


def strictness_cases() -> list[tuple[str, str | bytes, str]]:
    """(name, frame, the reason tests/test_poison_input.py expects): its socket cases and frames."""
    from tests.test_poison_input import SOCKET_CASES
    cases = [(f"{k}={str(v)[:12]}", order_alert_text("1100000001", **{k: v}), r)
             for fields, r in SOCKET_CASES for k, v in fields.items()]
    cases += [("NaN literal", '{"Type": "order_alert", "Data": {"Price": NaN}}', "not_finite"),
              ("5000 digits", '{"Type": "order_alert", "Data": {"Quantity": ' + "9" * 5000 + "}}", "out_of_range"),
              ("not json", "{not json", "bad_json"), ("not an object", "[1, 2]", "bad_shape"),
              ("Data not an object", '{"Type": "order_alert", "Data": [1]}', "bad_shape"),
              ("not utf-8", b"\xff\xfe{}", "bad_json")]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    r = args.repeat

    print("import cost (ms, a fresh interpreter, median of", r, "runs, less `python -c pass`)")
    for name, statement in (("pyyaml", "import yaml"),
                            ("pydantic (BaseModel, validators)",
                             "from pydantic import BaseModel, ConfigDict, Field, model_validator"),
                            ("msgspec", "import msgspec"),
                            ("copier.config (pydantic + trading + storage + broker + the models)",
                             "import copier.config"),
                            ("app.cli + copier.tree (what `run.py` imports before it reads the config)",
                             "import app.cli, copier.tree")):
        if name == "msgspec" and msgspec is None:
            continue
        print(f"  {name:75s} {import_ms(statement, r):7.1f}")

    print("\nconfig load (ms per load, best of", r, "runs)")
    for label, raw in (("shipped config.yaml", shipped()), ("200 followers", many_followers(200))):
        text = yaml.safe_dump(raw)
        print(f"  {label}: yaml.safe_load {best(lambda: yaml.safe_load(text), r, 3) * 1000:7.2f}"
              f"   pydantic models {best(lambda: parse(raw), r, 10) * 1000:7.3f}", end="")
        if msgspec is not None:
            schema = msgspec_schema()
            print(f"   msgspec structs {best(lambda: msgspec.convert(raw, schema), r, 10) * 1000:7.3f}", end="")
        print()

    print("\nthe error for followers[1].sizing.ratio = 'abc'")
    raw = shipped()
    raw["followers"][1]["sizing"]["ratio"] = "abc"
    try:
        parse(raw)
    except ConfigError as exc:
        print(f"  pydantic (ours, from its structured error): {exc}")
    if msgspec is not None:
        try:
            msgspec.convert(raw, msgspec_schema())
        except msgspec.ValidationError as exc:
            print(f"  msgspec (one string, no value, no bound):   {exc}")

    print("\nframes: microseconds per frame (best of", r, "runs); the reason each gives")
    valid = order_alert_text("1100000001")
    frames = {"valid order_alert": (valid, "accepted"), **bad_frames(valid)}
    parsers = {"hand-written": hand_written, "pydantic": pydantic_frame, "pydantic+checks": strict_pydantic_frame}
    print(f"  {'frame':20s}" + "".join(f"{name:>17s}" for name in parsers) + "   reasons (expected)")
    for name, (text, expected) in frames.items():
        number = 2 if name == "deep_nesting" else 2000
        costs = [best(lambda: reason(f, text), r, number) * 1e6 for f in parsers.values()]
        print(f"  {name:20s}" + "".join(f"{c:17.1f}" for c in costs) + "   "
              + " / ".join(reason(f, text) for f in parsers.values()) + f" ({expected})")
    cases = strictness_cases()
    print(f"\n  tests/test_poison_input.py's bad frames given the reason it expects (of {len(cases)}):")
    for label, parse_frame in parsers.items():
        wrong = [(n, e, reason(parse_frame, t)) for n, t, e in cases if reason(parse_frame, t) != e]
        print(f"    {label}: {len(cases) - len(wrong)}" + "".join(f"; {n}: {g} (expected {e})" for n, e, g in wrong))
        print(f"      the valid frame read as the hand-written parser reads it: {parse_frame(valid) == hand_written(valid)}")


if __name__ == "__main__":
    main()
