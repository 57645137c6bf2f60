"""Broker errors, classified by Dhan's DH-9xx codes (the `dhanhq` client hides the HTTP status)."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorKind(str, enum.Enum):
    AUTH = "auth"  # DH-901/902/903: stop this account, alert, no retry
    RATE_LIMITED = "rate_limited"  # DH-904: back off through the rate limiter
    INPUT = "input"  # DH-905
    ORDER = "order"  # DH-906: margin, circuit, market closed...
    DATA = "data"  # DH-907
    SERVER = "server"  # DH-908: retry with backoff
    NETWORK = "network"  # DH-909 or a transport failure: retry, look placements up first
    OTHER = "other"  # DH-910 or an unparseable answer


_KINDS = {
    "DH-901": ErrorKind.AUTH, "DH-902": ErrorKind.AUTH, "DH-903": ErrorKind.AUTH,
    "DH-904": ErrorKind.RATE_LIMITED, "DH-905": ErrorKind.INPUT, "DH-906": ErrorKind.ORDER,
    "DH-907": ErrorKind.DATA, "DH-908": ErrorKind.SERVER, "DH-909": ErrorKind.NETWORK,
    "DH-910": ErrorKind.OTHER,
}
CODES = (*_KINDS, "TRANSPORT")  # every BrokerError.code (metric label values known in advance)
# every BrokerError.reason: the market's and the account's conditions named below, else the kind
FAILURE_REASONS = ("insufficient_margin", "trading_halted", "circuit_limit", "exchange_holiday", "market_closed",
                   *(kind.value for kind in ErrorKind))
TRANSIENT = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.SERVER, ErrorKind.NETWORK})


@dataclass(frozen=True)
class BrokerError:
    code: str  # DH-9xx, or "TRANSPORT" when no answer arrived
    kind: ErrorKind
    message: str

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT

    @property
    def reason(self) -> str:
        """A short, bounded label for metrics and skip records."""
        text = self.message.lower()
        if "margin" in text or "insufficient" in text or "funds" in text:
            return "insufficient_margin"
        if "halt" in text:  # before "circuit": a market-wide circuit breaker is a halt
            return "trading_halted"
        if "circuit" in text:
            return "circuit_limit"
        if "holiday" in text:
            return "exchange_holiday"
        if "market closed" in text or "market is closed" in text:
            return "market_closed"
        return self.kind.value

    def __str__(self) -> str:
        return f"{self.code} {self.kind.value}: {self.message}"


def classify(remarks: object) -> BrokerError:
    """Turn `dhanhq`'s failure `remarks` into a BrokerError.

    A dict carries Dhan's error body; a string is the text of a transport exception
    (connection refused, timeout, a closed connection) and counts as a network error.
    """
    if isinstance(remarks, dict):
        code = str(remarks.get("error_code") or "")
        message = str(remarks.get("error_message") or remarks.get("error_type") or "")
        return BrokerError(code or "DH-910", _KINDS.get(code, ErrorKind.OTHER), message)
    return BrokerError("TRANSPORT", ErrorKind.NETWORK, str(remarks)[:300])
