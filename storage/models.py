"""Tables. No column ever holds an access token."""
from __future__ import annotations

import time

import peewee as pw

database_proxy = pw.DatabaseProxy()


def now() -> float:
    return time.time()


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False
        only_save_dirty = True  # an UPDATE of the changed columns only: cheaper to build and to run


class InboundEvent(BaseModel):
    """The durable inbox (storage/inbox.py says how it is written and acknowledged)."""

    account = pw.CharField()  # "leader" or a follower name
    order_id = pw.CharField(index=True)
    dedupe_key = pw.CharField(unique=True)
    source = pw.CharField()  # socket | book | poll
    payload = pw.TextField()  # JSON of the OrderUpdate
    received_at = pw.FloatField(default=now)
    received_ns = pw.BigIntegerField(default=0)
    done = pw.BooleanField(default=False, index=True)
    outcome = pw.CharField(null=True)


class LeaderOrder(BaseModel):
    order_id = pw.CharField(primary_key=True)
    status = pw.CharField()
    security_id = pw.CharField()
    exchange_segment = pw.CharField()
    symbol = pw.CharField(default="")
    side = pw.CharField()
    quantity = pw.IntegerField()
    terms = pw.TextField()  # JSON of OrderTerms
    filled_qty = pw.IntegerField(default=0)
    avg_price = pw.FloatField(default=0.0)
    created_at = pw.CharField(default="")
    updated_at = pw.CharField(default="")
    sequence = pw.IntegerField(null=True)
    first_seen_at = pw.FloatField(default=now)
    last_event_at = pw.FloatField(default=now)
    filled_at = pw.FloatField(null=True)
    group_id = pw.CharField(null=True, index=True)  # multi-leg strategy: the order id of its first leg
    underlying = pw.CharField(null=True)
    account = pw.CharField(default="leader")  # whose order: "leader", or "leader:NAME" of several leaders
    reduces_position = pw.BooleanField(default=False)  # sized as an exit: its copies are sent however late
    position_before = pw.IntegerField(null=True)  # sized as an exit: the leader's position before it


class FollowerOrder(BaseModel):
    """One copy of one leader order in one follower account.

    `target` is what the copy should be (from the leader's latest terms, sized); `confirmed` is
    what the broker last acknowledged. The order actor converges the second onto the first.
    """

    leader_order_id = pw.CharField(index=True)
    follower = pw.CharField()
    correlation_id = pw.CharField(unique=True)
    generation = pw.IntegerField(default=0)  # bumped when an operator retries a dead-lettered copy
    part = pw.IntegerField(default=0)  # which slice of a copy above the freeze quantity (0: the first or only)
    target_leg = pw.CharField(null=True)  # a super order's exit legs at the broker (status; null: not seen)
    stop_loss_leg = pw.CharField(null=True)
    held = pw.BooleanField(default=False)  # a SELL leg held until its strategy's BUY legs fill (legs: buy_first)
    broker_order_id = pw.CharField(null=True, index=True)
    status = pw.CharField()
    security_id = pw.CharField()
    side = pw.CharField()
    quantity = pw.IntegerField(default=0)
    target = pw.TextField()
    confirmed = pw.TextField(null=True)
    cancel_requested = pw.BooleanField(default=False)
    filled_qty = pw.IntegerField(default=0)
    avg_price = pw.FloatField(default=0.0)
    modifications = pw.IntegerField(default=0)
    skip_reason = pw.CharField(null=True)
    last_error = pw.TextField(null=True)
    anomaly = pw.CharField(null=True)
    latency_ms = pw.FloatField(null=True)  # leader update received -> placement request sent
    slippage = pw.FloatField(null=True)  # (follower avg - leader avg) / leader avg, against the follower
    reserved = pw.FloatField(default=0.0)
    created_at = pw.FloatField(default=now)
    updated_at = pw.FloatField(default=now)
    placed_at = pw.FloatField(null=True)

    class Meta:
        indexes = ((("leader_order_id", "follower"), False),)


class ForeverCopy(BaseModel):
    """A follower's copy of a leader forever (GTT) order. `leader` is the leader's order as last
    applied (JSON), `target` the sized copy; the forever actor converges the broker onto it."""

    leader_forever_id = pw.CharField(index=True)
    follower = pw.CharField()
    correlation_id = pw.CharField(unique=True)
    follower_forever_id = pw.CharField(null=True)
    status = pw.CharField()  # PENDING_PLACEMENT, PENDING, TRIGGERED, CANCELLED, REJECTED, SKIPPED
    security_id = pw.CharField()
    side = pw.CharField()
    leader_quantity = pw.IntegerField()
    leader = pw.TextField()
    target = pw.TextField(null=True)
    confirmed = pw.TextField(null=True)
    cancel_requested = pw.BooleanField(default=False)
    last_error = pw.TextField(null=True)
    updated_at = pw.FloatField(default=now)

    class Meta:
        indexes = ((("leader_forever_id", "follower"), True),)


class OrderEventRecord(BaseModel):
    """The per-order event store: an order's state is the fold of these, in `seq` order."""

    order_key = pw.CharField()  # "L:<leader order id>" or "F:<correlation id>"
    seq = pw.IntegerField()
    kind = pw.CharField()
    payload = pw.TextField()
    at = pw.FloatField(default=now)

    class Meta:
        indexes = ((("order_key", "seq"), True),)


class Fill(BaseModel):
    account = pw.CharField()
    order_id = pw.CharField(index=True)
    leader_order_id = pw.CharField(index=True)
    quantity = pw.IntegerField()
    price = pw.FloatField()
    cumulative_qty = pw.IntegerField()
    at = pw.FloatField(default=now)
    exchange_time = pw.CharField(default="")


class Skip(BaseModel):
    leader_order_id = pw.CharField(index=True)
    follower = pw.CharField(null=True)
    reason = pw.CharField(index=True)
    detail = pw.TextField(default="")
    at = pw.FloatField(default=now)


class DeadLetter(BaseModel):
    """Work the copier gave up on until an operator decides (storage/dead_letters.py says which).
    For parked messages `follower` is the account the message came from, `error_code` the
    exception's type, and `payload` the message itself (bounded, secrets redacted)."""

    leader_order_id = pw.CharField(index=True)
    follower = pw.CharField()
    correlation_id = pw.CharField()
    operation = pw.CharField()
    error_code = pw.CharField()
    reason = pw.TextField()
    retry_count = pw.IntegerField(default=0)
    next_retry_at = pw.FloatField(null=True)
    resolved = pw.BooleanField(default=False)
    at = pw.FloatField(default=now)
    event_id = pw.IntegerField(null=True)
    payload = pw.TextField(null=True)


class Divergence(BaseModel):
    kind = pw.CharField(index=True)
    leader_order_id = pw.CharField(null=True)
    follower = pw.CharField(null=True)
    detail = pw.TextField(default="")
    repaired = pw.BooleanField(default=False)
    run_id = pw.IntegerField(index=True)
    at = pw.FloatField(default=now)


class Alert(BaseModel):
    level = pw.CharField()
    key = pw.CharField(index=True)
    message = pw.TextField()
    at = pw.FloatField(default=now)


class Setting(BaseModel):
    key = pw.CharField(primary_key=True)
    value = pw.TextField()


class AdoptedCopy(BaseModel):
    """A follower order found at a first start (an empty database) carrying the correlation id this
    copier derives for one of the leader's orders: that order's copy, taken over, never placed again."""

    leader_order_id = pw.CharField()
    follower = pw.CharField()
    generation = pw.IntegerField()
    order = pw.TextField()  # JSON of the follower's OrderUpdate, as its order book showed it

    class Meta:
        indexes = ((("leader_order_id", "follower"), True),)


class FollowerControl(BaseModel):
    """What operators set for a follower while the copier ran (`run.py follower ...`): its pause and
    the sizing keys changed over the config's. It outlives restarts and wins over the config."""

    follower = pw.CharField(primary_key=True)
    paused = pw.BooleanField(default=False)
    pause_reason = pw.TextField(default="")
    paused_by = pw.CharField(default="")  # who paused it last, and when
    paused_at = pw.FloatField(default=0.0)
    sizing = pw.TextField(default="{}")  # JSON: sizing key -> value, over the config's sizing
    sizing_by = pw.CharField(default="")  # who set those keys last, and when
    sizing_at = pw.FloatField(default=0.0)


class FollowerAudit(BaseModel):
    """Every change made to a follower while the copier ran: who, when, what."""

    follower = pw.CharField(index=True)
    action = pw.CharField()  # pause, resume, catch-up, set, reset, add, remove, square-off
    detail = pw.TextField(default="")
    by = pw.CharField()
    at = pw.FloatField(default=now)


class ControlRequest(BaseModel):
    """An operator command for the running copier, from another process: taken by the copier once,
    answered once; withdrawn by the command if it gives up first (then never carried out)."""

    command = pw.TextField()  # JSON
    by = pw.CharField()
    requested_at = pw.FloatField(default=now)
    state = pw.CharField(default="waiting", index=True)  # waiting, taken, answered, withdrawn, expired
    ok = pw.BooleanField(null=True)
    answer = pw.TextField(null=True)
    answered_at = pw.FloatField(null=True)


class SquareOffRun(BaseModel):
    """One follower's square-off: its open copies cancelled, then its positions closed at market."""

    request_id = pw.IntegerField(index=True)  # the ControlRequest that asked for it
    follower = pw.CharField()
    segments = pw.TextField(default="[]")  # JSON: only these exchange segments ([]: every one)
    by = pw.CharField()
    phase = pw.CharField(index=True)  # cancelling, reading, closing; then done, incomplete or failed
    report = pw.TextField(default="")
    started_at = pw.FloatField(default=now)
    finished_at = pw.FloatField(null=True)


class ClosingOrder(BaseModel):
    """A market order closing one position of a square-off, stored before it is sent; its
    correlation id is derived from the run and the position, so it is looked up, never sent twice."""

    run_id = pw.IntegerField(index=True)
    follower = pw.CharField()
    correlation_id = pw.CharField(unique=True)
    terms = pw.TextField()  # JSON of OrderTerms
    status = pw.CharField()  # new, unknown, open, filled, failed
    broker_order_id = pw.CharField(null=True)
    placements = pw.IntegerField(default=0)  # sends that lookups found never took effect, plus the first
    detail = pw.TextField(default="")
    updated_at = pw.FloatField(default=now)


ALL_MODELS = [InboundEvent, LeaderOrder, FollowerOrder, ForeverCopy, OrderEventRecord, Fill, Skip,
              DeadLetter, Divergence, Alert, Setting, AdoptedCopy, FollowerControl, FollowerAudit, ControlRequest,
              SquareOffRun, ClosingOrder]
