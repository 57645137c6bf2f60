"""Broker errors, classified by Dhan's DH-9xx codes and the answer's HTTP status.

`dhanhq` drops the HTTP status when it shapes an answer; broker/transport.py keeps it beside the
answer (`HTTP_STATUS`), because a 5xx without an error code (a gateway in front of the broker,
an overloaded server) says nothing about whether an order was placed."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorKind(str, enum.Enum):
    AUTH = "auth"  # DH-901/902/903: stop this account, alert, no retry
    RATE_LIMITED = "rate_limited"  # DH-904: back off through the rate limiter
    INPUT = "input"  # DH-905
    ORDER = "order"  # DH-906: margin, circuit, market closed...
    DATA = "data"  # DH-907
    SERVER = "server"  # DH-908, or a 5xx naming no refusal: retry with backoff, look placements up
    NETWORK = "network"  # DH-909, a transport failure or an unreadable answer: likewise
    OTHER = "other"  # DH-910 (below 500), or a 4xx without a known code


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
    code: str  # DH-9xx; HTTP-5xx (a status without a code); TRANSPORT (no answer); CLIENT (never sent)
    kind: ErrorKind
    message: str
    http_status: int | None = None  # None: no answer arrived (or it was never sent)

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT

    @property
    def from_broker(self) -> bool:
        """The broker's application answered with one of its codes (a DH-908 is Dhan saying it
        failed, not a gateway's 502 while the broker may still be at work)."""
        return self.http_status is not None and self.code.startswith("DH-")

    @property
    def outcome_unknown(self) -> bool:
        """For a call that changes state (a placement): the broker may have acted on it, or not.
        No answer, a 5xx or an unreadable answer; never a refusal Dhan named."""
        return self.kind in (ErrorKind.SERVER, ErrorKind.NETWORK)

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


def classify(remarks: object, http_status: int | None = None) -> BrokerError:
    """Turn `dhanhq`'s failure `remarks` (and the answer's HTTP status, when one arrived) into a
    BrokerError.

    A dict carries Dhan's error body. A string is the text of a transport exception (connection
    refused, timeout, a closed connection: no status) or of an answer that was not JSON; both
    are network errors, or server errors with a 5xx. A 5xx is a server error unless its code
    names a refusal (DH-901 to DH-907): a 502 from a gateway, with or without a body, may come
    after the broker acted.
    """
    if isinstance(remarks, dict):
        code = str(remarks.get("error_code") or "")
        message = str(remarks.get("error_message") or remarks.get("error_type") or "")
        kind = _KINDS.get(code, ErrorKind.OTHER)
        if kind == ErrorKind.OTHER and http_status is not None:
            if http_status >= 500:  # not a refusal Dhan named: the broker may have acted
                kind = ErrorKind.SERVER
            elif http_status == 429 and not code:
                kind = ErrorKind.RATE_LIMITED
        if not code:
            code = f"HTTP-{http_status}" if http_status is not None else "DH-910"
            status = f"HTTP {http_status}" if http_status is not None else "an error answer"
            message = message or f"{status} without an error code"
        return BrokerError(code, kind, message, http_status)
    text = str(remarks)[:300]
    if http_status is None:
        return BrokerError("TRANSPORT", ErrorKind.NETWORK, text)
    kind = ErrorKind.SERVER if http_status >= 500 else ErrorKind.NETWORK
    return BrokerError(f"HTTP-{http_status}", kind, f"unreadable answer (HTTP {http_status}): {text}", http_status)
