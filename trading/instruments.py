"""The instrument master: lot sizes, tick sizes and option metadata by security id.

Loaded from Dhan's published CSV (or the paper exchange's copy) by path or URL; a URL is cached
on disk and refreshed once a day. Lookups that miss trigger one reload before the caller
records a skip.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# (exchange id, segment letter) -> the exchange segment the order APIs take
_SEGMENTS = {
    ("NSE", "E"): "NSE_EQ", ("BSE", "E"): "BSE_EQ", ("NSE", "D"): "NSE_FNO",
    ("BSE", "D"): "BSE_FNO", ("MCX", "M"): "MCX_COMM", ("NSE", "C"): "NSE_CURRENCY",
}


@dataclass(frozen=True)
class Instrument:
    security_id: str
    exchange_segment: str
    symbol: str
    instrument: str  # EQUITY, OPTIDX, FUTIDX, OPTSTK, FUTSTK...
    lot_size: int
    tick_size: float
    expiry: str = ""
    strike: float = 0.0
    option_type: str = ""  # CE / PE / ""
    underlying: str = ""

    @property
    def is_derivative(self) -> bool:
        return self.exchange_segment in ("NSE_FNO", "BSE_FNO", "MCX_COMM", "NSE_CURRENCY")

    @property
    def is_option(self) -> bool:
        return self.option_type in ("CE", "PE")


def _underlying(symbol: str, instrument: str) -> str:
    """NIFTY-Dec2026-24000-CE -> NIFTY; plain equities are their own underlying."""
    if instrument.startswith(("OPT", "FUT")):
        return symbol.split("-")[0].split(" ")[0]
    return symbol


def parse_master(text: str) -> dict[tuple[str, str], Instrument]:
    """Parse the CSV; rows with unknown segments or bad numbers are skipped and counted in the log."""
    out: dict[tuple[str, str], Instrument] = {}
    bad = 0
    for row in csv.DictReader(io.StringIO(text)):
        try:
            seg = _SEGMENTS[(row["SEM_EXM_EXCH_ID"].strip(), row["SEM_SEGMENT"].strip())]
            symbol = row["SEM_TRADING_SYMBOL"].strip()
            kind = row.get("SEM_INSTRUMENT_NAME", "").strip()
            opt = row.get("SEM_OPTION_TYPE", "").strip()
            inst = Instrument(
                security_id=row["SEM_SMST_SECURITY_ID"].strip(), exchange_segment=seg, symbol=symbol,
                instrument=kind, lot_size=max(1, int(float(row.get("SEM_LOT_UNITS") or 1))),
                tick_size=float(row.get("SEM_TICK_SIZE") or 0.05),
                expiry=(row.get("SEM_EXPIRY_DATE") or "").strip(),
                strike=float(row.get("SEM_STRIKE_PRICE") or 0) if (row.get("SEM_STRIKE_PRICE") or "").strip() not in ("", "-") else 0.0,
                option_type=opt if opt in ("CE", "PE") else "",
                underlying=_underlying(symbol, kind),
            )
        except (KeyError, ValueError):
            bad += 1
            continue
        out[(inst.exchange_segment, inst.security_id)] = inst
    if bad:
        log.warning("instrument master: skipped %d unreadable rows", bad)
    return out


class InstrumentMasterError(ValueError):
    """The instrument master cannot be read or is not Dhan's instrument master CSV."""


_REQUIRED_COLUMNS = ("SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID", "SEM_TRADING_SYMBOL")


class InstrumentMaster:
    """Thread-safe lookup by (exchange segment, security id), reloaded on a miss at most once a minute.

        master = InstrumentMaster("https://images.dhan.co/api-data/api-scrip-master.csv", cache_dir="data")
        master.load()                      # how many instruments it read
        master.get("NSE_EQ", "2885")       # Instrument(symbol="RELIANCE", lot_size=1, ...), or None
    """

    RELOAD_ON_MISS_SECONDS = 60.0
    REFRESH_SECONDS = 24 * 3600.0

    def __init__(self, source: str, cache_dir: str | os.PathLike[str] = "data") -> None:
        self.source = source
        self.cache_dir = Path(cache_dir)
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Instrument] = {}
        self._loaded_at = 0.0

    def load(self) -> int:
        """Read and parse the source; InstrumentMasterError (or OSError) says why it cannot be used."""
        try:
            text = self._read_source()
        except UnicodeDecodeError:
            raise InstrumentMasterError(f"{self.source!r} is not a text file (Dhan's instrument master is a CSV)") from None
        try:
            header = [name.strip() for name in next(csv.reader(io.StringIO(text[:4096])), [])]
            missing = [c for c in _REQUIRED_COLUMNS if c not in header]
            if missing:
                raise InstrumentMasterError(f"{self.source!r} is not Dhan's instrument master CSV "
                                            f"(no {', '.join(missing)} column)")
            table = parse_master(text)
        except csv.Error as exc:
            raise InstrumentMasterError(f"{self.source!r} is not a readable CSV: {exc}") from None
        if not table:
            raise InstrumentMasterError(f"instrument master {self.source!r} holds no instruments")
        with self._lock:
            self._by_key = table
            self._loaded_at = time.monotonic()
        return len(table)

    def _read_source(self) -> str:
        if not self.source.startswith(("http://", "https://")):
            return Path(self.source).read_text(encoding="utf-8")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cached = self.cache_dir / "instrument-master.csv"
        if cached.exists() and time.time() - cached.stat().st_mtime < self.REFRESH_SECONDS:
            return cached.read_text(encoding="utf-8")
        try:
            with urllib.request.urlopen(self.source, timeout=30) as answer:  # noqa: S310 (configured URL)
                text = answer.read().decode("utf-8")
        except OSError:
            if cached.exists():
                log.warning("instrument master download failed; using the cached copy")
                return cached.read_text(encoding="utf-8")
            raise
        cached.write_text(text, encoding="utf-8")
        return text

    def get(self, exchange_segment: str, security_id: str) -> Instrument | None:
        key = (exchange_segment, str(security_id))
        with self._lock:
            found = self._by_key.get(key)
            stale = time.monotonic() - self._loaded_at > self.RELOAD_ON_MISS_SECONDS
        if found is not None or not stale:
            return found
        try:  # the instrument may be newly listed: reload once before the caller gives up
            self.load()
        except (OSError, ValueError) as exc:
            log.warning("instrument master reload failed: %s", exc)
        with self._lock:
            return self._by_key.get(key)

    def all(self) -> list[Instrument]:
        with self._lock:
            return list(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)
