"""What the stream's callers see of it, without the NATS client: what fails, what is delivered,
what the server says of a consumer, and how its server's URL is shown."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class StreamUnavailable(Exception):
    """The stream server could not be reached or did not confirm in time: nothing was stored
    there, or it is not known to be. Whoever called keeps the message and tries again."""


def redact_url(url: str) -> str:
    """`url` without the password it may carry (nats://user:password@host:port), for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}{port}").geturl()


@dataclass(frozen=True)
class Delivery:
    """One message from the stream, acknowledged once its effect is stored."""

    data: bytes
    stream_seq: int
    deliveries: int  # 1 on first delivery
    handle: Any = field(repr=False, compare=False)  # the client's message, to acknowledge it


@dataclass(frozen=True)
class ConsumerState:
    """What the server knows of one durable consumer (for `status`)."""

    name: str
    pending: int  # in the stream, not yet delivered
    unacknowledged: int  # delivered, not yet acknowledged
    waiting: int  # pull requests waiting: > 0 while a shard is reading
    acknowledged_seq: int  # everything up to this stream sequence is acknowledged
