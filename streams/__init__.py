"""The durable stream between the leader feed process and the follower shards (NATS JetStream).

- `base`: what callers handle (`StreamUnavailable`) and receive (`Delivery`), without the client.
- `wire`: what a stream message carries (a leader order update, a kill-switch change) and how it
  is read back; a message that cannot be read is a `BadStreamMessage`, never a crash.
- `jetstream`: the NATS client, on an event loop of its own, behind blocking calls the copier's
  threads make. It is the only module that imports `nats`, and nothing imports it unless the
  config asks for shards (`shards: N`), so a single-process copier needs no NATS at all.
"""
from streams.base import ConsumerState, Delivery, StreamUnavailable, redact_url

__all__ = ["ConsumerState", "Delivery", "StreamUnavailable", "redact_url"]
