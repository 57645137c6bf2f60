"""Per-order freeze quantities: the most units of an instrument the exchange accepts in one order.

Dhan's instrument master does not carry them, so they come from a table (data/freeze_limits.csv,
the exchanges' circulars; see paper/README.md) keyed by exchange segment and underlying, with
`*` for every other underlying of a segment. An underlying the table does not name is not
limited. Tests override a row with `FreezeLimits.set` or load their own table."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping

from .instruments import DATA_DIR, Instrument

DEFAULT_TABLE = DATA_DIR / "freeze_limits.csv"
ANY = "*"


def underlying(ins: Instrument) -> str:
    """The underlying a derivative is written on, as its trading symbol names it
    (`NIFTY-Dec2026-24000-CE` -> `NIFTY`); an equity is its own underlying."""
    return ins.trading_symbol.split("-", 1)[0].upper()


class FreezeLimits:
    def __init__(self, source: str | Path | Mapping[str, int | None] | None = None) -> None:
        """`source`: a CSV table (`exchange_segment,underlying,freeze_qty`), or a mapping
        underlying -> quantity for the F&O segments (None: no limit); default the shipped table."""
        self._table: dict[tuple[str, str], int | None] = {}
        if source is None or isinstance(source, (str, Path)):
            self._load(Path(source) if source is not None else DEFAULT_TABLE)
        else:
            for name, qty in source.items():
                self.set(name, qty)

    def _load(self, path: Path) -> None:
        with path.open(newline="") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                try:
                    segment, name = row["exchange_segment"].strip().upper(), row["underlying"].strip().upper()
                    raw = (row.get("freeze_qty") or "").strip()
                    qty = int(raw) if raw else None
                except (KeyError, AttributeError, ValueError) as e:
                    raise ValueError(f"{path}:{n}: a row needs exchange_segment, underlying and a whole "
                                     f"freeze_qty ({e})") from None
                if qty is not None and qty < 1:
                    raise ValueError(f"{path}:{n}: freeze_qty must be at least 1")
                self._table[(segment, name)] = qty

    def set(self, name: str, qty: int | None, segment: str | None = None) -> None:
        """Limit `name` (an underlying, or `*`) to `qty` units per order (None: no limit), in
        `segment` or, by default, in both F&O segments."""
        if qty is not None and int(qty) < 1:
            raise ValueError("freeze quantity must be at least 1 (or None for no limit)")
        for seg in (segment,) if segment else ("NSE_FNO", "BSE_FNO"):
            self._table[(seg.upper(), name.upper())] = None if qty is None else int(qty)

    def limit(self, ins: Instrument) -> int | None:
        """Units one order of `ins` may carry at most, or None."""
        seg = ins.exchange_segment
        key = (seg, underlying(ins))
        return self._table[key] if key in self._table else self._table.get((seg, ANY))

    def largest_slice(self, ins: Instrument) -> int | None:
        """Whole lots within the freeze quantity (the most one slice may carry), or None."""
        limit = self.limit(ins)
        if limit is None:
            return None
        return max(ins.lot_size, limit // ins.lot_size * ins.lot_size)

    def slices(self, ins: Instrument, quantity: int) -> list[int]:
        """`quantity` cut into orders of the largest slice, the remainder last."""
        size = self.largest_slice(ins)
        if size is None or quantity <= size:
            return [quantity]
        full, rest = divmod(quantity, size)
        return [size] * full + ([rest] if rest else [])
