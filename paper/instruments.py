"""Instrument master in Dhan's CSV columns, so the exchange and the copier read the same file format."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_CSV = DATA_DIR / "instruments.csv"
DEFAULT_PRICES = DATA_DIR / "start_prices.csv"

# (exchange, segment letter) -> exchangeSegment used by the REST API.
_SEGMENTS = {("NSE", "E"): "NSE_EQ", ("BSE", "E"): "BSE_EQ", ("NSE", "D"): "NSE_FNO",
             ("BSE", "D"): "BSE_FNO", ("MCX", "M"): "MCX_COMM", ("NSE", "C"): "NSE_CURRENCY"}


@dataclass(frozen=True)
class Instrument:
    security_id: str
    exchange: str              # NSE / BSE / MCX
    segment: str               # E / D / C / M
    instrument_name: str       # EQUITY / OPTIDX / FUTIDX ...
    trading_symbol: str
    lot_size: int
    expiry_date: str           # "YYYY-MM-DD HH:MM:SS" or ""
    strike: float              # 0 when not an option
    option_type: str           # CE / PE / XX
    tick_size: float
    custom_symbol: str
    start_price: float

    @property
    def exchange_segment(self) -> str:
        return _SEGMENTS[(self.exchange, self.segment)]

    @property
    def is_equity(self) -> bool:
        return self.segment == "E"

    @property
    def is_option(self) -> bool:
        return self.option_type in ("CE", "PE")

    @property
    def is_future(self) -> bool:
        return self.instrument_name.startswith("FUT")


def _start_prices(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {r["SEM_SMST_SECURITY_ID"]: float(r["START_PRICE"]) for r in csv.DictReader(f)}


def load_instruments(path: str | Path | None = None) -> dict[str, Instrument]:
    """Read an instrument master; start prices come from start_prices.csv beside it (100 if absent)."""
    path = Path(path) if path else DEFAULT_CSV
    prices = _start_prices(path.parent / DEFAULT_PRICES.name)
    out: dict[str, Instrument] = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            sid = r["SEM_SMST_SECURITY_ID"].strip()
            strike = float(r["SEM_STRIKE_PRICE"] or 0)
            out[sid] = Instrument(
                security_id=sid, exchange=r["SEM_EXM_EXCH_ID"].strip(), segment=r["SEM_SEGMENT"].strip(),
                instrument_name=r["SEM_INSTRUMENT_NAME"].strip(), trading_symbol=r["SEM_TRADING_SYMBOL"].strip(),
                lot_size=max(1, int(float(r["SEM_LOT_UNITS"] or 1))), expiry_date=r["SEM_EXPIRY_DATE"].strip(),
                strike=max(strike, 0.0), option_type=(r["SEM_OPTION_TYPE"] or "XX").strip(),
                tick_size=float(r["SEM_TICK_SIZE"] or 0.05), custom_symbol=r.get("SEM_CUSTOM_SYMBOL", "").strip(),
                start_price=prices.get(sid, 100.0))
    return out
