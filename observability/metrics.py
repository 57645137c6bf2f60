"""The metrics catalogue: every metric the copier exports, in one place (see grafana/README.md).

Label sets are bounded: follower names, reasons, kinds, endpoints, DH codes; never an order id.
"""
from __future__ import annotations

import threading
from typing import Any, Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

LEADER_EVENTS = Counter("copytrader_leader_events_total", "Leader order updates received, by kind",
                        ["kind"])
INBOUND_UPDATES = Counter("copytrader_inbound_updates_total",
                          "Order updates received from the broker, by account role and source",
                          ["role", "source"])
DUPLICATE_UPDATES = Counter("copytrader_duplicate_updates_total", "Order updates dropped as exact duplicates",
                            ["role"])
STALE_UPDATES = Counter("copytrader_stale_updates_total", "Order updates ignored as older than the state applied",
                        ["role"])
OWN_COPIES_IGNORED = Counter("copytrader_own_copies_ignored_total",
                             "Orders in a leader's book that are the copier's own copies (the account also follows "
                             "another leader): never copied back", ["leader"])
LEADER_REREADS = Counter("copytrader_leader_rereads_total",
                         "Leader orders read again from the broker because two of their updates were ambiguous "
                         "(same second, no sequence), by outcome (asked, failed, unresolved)", ["outcome"])
MALFORMED_MESSAGES = Counter("copytrader_malformed_messages_total", "Socket messages that could not be used",
                             ["role", "reason"])
INVALID_TRANSITIONS = Counter("copytrader_invalid_transitions_total",
                              "Order events the state machine refused", ["role", "event"])
FOLLOWER_ORDERS = Counter("copytrader_follower_orders_total",
                          "Follower order operations by outcome (placed, modified, cancelled, failed)",
                          ["follower", "operation", "outcome"])
FOLLOWER_FAILURES = Counter("copytrader_follower_failures_total", "Failed follower operations by reason",
                            ["follower", "operation", "reason"])
UNKNOWN_OUTCOMES = Counter("copytrader_placement_outcome_unknown_total",
                           "Follower placements whose outcome was unknown (answer lost, 5xx, unreadable): "
                           "looked up, never sent again blind", ["follower"])
SKIPS = Counter("copytrader_skips_total", "Copies deliberately not made, by reason", ["follower", "reason"])
SLICED_COPIES = Counter("copytrader_sliced_copies_total",
                        "Copies above the exchange's freeze quantity, placed as several slices within it",
                        ["follower"])
COPY_SLICES = Counter("copytrader_copy_slices_total",
                      "Slices of sliced copies, each its own broker order (a larger leader quantity adds more)",
                      ["follower"])
LEGS_HELD = Gauge("copytrader_legs_held",
                  "SELL legs of strategies held now for a legs: buy_first follower, waiting for their BUY legs to fill",
                  ["follower"])
REPLICATION_LATENCY = Histogram("copytrader_replication_latency_seconds",
                                "Leader update received -> follower placement request sent",
                                ["follower"], buckets=_LATENCY_BUCKETS)
BROKER_LATENCY = Histogram("copytrader_broker_request_seconds", "Broker REST call duration",
                           ["account", "endpoint"], buckets=_LATENCY_BUCKETS)
BROKER_ERRORS = Counter("copytrader_broker_errors_total", "Broker REST errors by endpoint and DH code",
                        ["account", "endpoint", "code"])
SLIPPAGE = Histogram("copytrader_fill_slippage_ratio",
                     "Follower average fill price vs the leader's, signed against the follower (fraction)",
                     ["follower"], buckets=(-0.01, -0.005, -0.002, -0.001, 0, 0.001, 0.002, 0.005, 0.01, 0.02))
FILLS = Counter("copytrader_fills_total", "Fills recorded, by account role", ["role"])
FOLLOWER_LAG = Gauge("copytrader_follower_lag_orders",
                     "Follower copies still open N seconds after the leader's order filled", ["follower"])
LAG_ALERTS = Counter("copytrader_follower_lag_alerts_total", "Lag alerts raised", ["follower"])
OPEN_ORDERS = Gauge("copytrader_open_orders", "Open orders known to the copier, by account", ["account"])
ACTOR_RESTARTS = Counter("copytrader_actor_restarts_total", "Supervised actor restarts, by actor kind",
                         ["kind"])
ACTORS_RUNNING = Gauge("copytrader_order_actors", "Order actors alive")
MAILBOX_DEPTH = Gauge("copytrader_mailbox_depth", "Messages waiting in an actor's inbox", ["actor"])
RATE_LIMIT_QUEUE = Gauge("copytrader_rate_limiter_queue", "Broker calls waiting for a rate-limit slot",
                         ["account"])
RATE_LIMIT_TOKENS = Gauge("copytrader_rate_limiter_tokens", "Order calls still allowed in the tightest window",
                          ["account"])
RATE_LIMITED = Counter("copytrader_rate_limited_total", "DH-904 answers received", ["account"])
RETRIES = Counter("copytrader_broker_retries_total", "Broker calls retried after a transient failure",
                  ["account", "operation"])
QUOTE_REQUESTS = Counter("copytrader_quote_requests_total",
                         "Market quote (LTP) requests sent to the broker, by account and outcome (ok, failed)",
                         ["account", "outcome"])
QUOTE_LOOKUPS = Counter("copytrader_quote_lookups_total",
                        "Quote cache lookups for leader orders without a price: hit (fresh) or miss (asked the broker)",
                        ["result"])
REFERENCE_PRICES = Counter("copytrader_reference_prices_total",
                           "Leader orders without a price of their own, by what valued them (quote, leader_fill, none)",
                           ["source"])
QUOTE_ACCOUNTS = Gauge("copytrader_quote_accounts", "Accounts the copier asks market quotes through (data plan active)")
DEAD_LETTERS = Gauge("copytrader_dead_letters", "Unresolved entries in the dead-letter queue")
POISON_MESSAGES = Counter("copytrader_poison_messages_total",
                          "Messages parked as dead letters because they kept crashing the actor handling them",
                          ["actor"])
DIVERGENCES = Counter("copytrader_reconciler_divergences_total", "Divergences found by the reconciler",
                      ["kind"])
RECONCILE_RUNS = Counter("copytrader_reconciler_runs_total", "Reconciler runs")
FEED_CONNECTED = Gauge("copytrader_feed_connected", "1 while the order-update socket is logged in",
                       ["account"])
FEED_RECONNECTS = Counter("copytrader_feed_reconnects_total", "Order-update socket reconnects", ["account"])
BACKFILLED = Counter("copytrader_backfilled_updates_total",
                     "Order updates recovered from the order book after a (re)connect", ["account"])
KILL_SWITCH = Gauge("copytrader_kill_switch_active", "1 while the kill switch is on")
FOLLOWER_PAUSED = Gauge("copytrader_follower_paused",
                        "1 while an operator has the follower paused (run.py follower pause, square-off): new "
                        "leader orders are recorded as skips, not copied to it", ["follower"])
STORAGE_RETRIES = Counter("copytrader_storage_retries_total", "Storage writes retried after an error")
STORAGE_HEALTHY = Gauge("copytrader_storage_healthy", "0 while storage writes are failing")
ALERTS = Counter("copytrader_alerts_total", "Alerts raised, by level and key", ["level", "key"])
ORDERS_EXPIRED_AT_START = Counter("copytrader_orders_expired_at_start_total",
                                  "Open DAY orders of an earlier trading session closed in storage at start-up "
                                  "(the exchange expired them at that session's close), by account", ["account"])
ANOMALIES = Counter("copytrader_anomalies_total", "Anomalies recorded (e.g. follower filled first)", ["kind"])
SUPER_LEG_CALLS = Counter("copytrader_super_order_leg_calls_total",
                          "Calls on the legs of follower super orders, by leg (ENTRY_LEG, TARGET_LEG, STOP_LOSS_LEG), "
                          "operation (modify, cancel) and outcome (done, failed)",
                          ["follower", "leg", "operation", "outcome"])
SUPER_ORDER_READS = Counter("copytrader_super_order_reads_total",
                            "Reads of the leader's super orders (no order update carries their target, stop-loss "
                            "or trailing jump), by outcome (changed, unchanged, failed)", ["outcome"])
# shards: the leader feed process publishes to the stream, each follower shard reads it (one
# metrics port per process: see README, "Follower shards")
SHARD_FOLLOWERS = Gauge("copytrader_shard_followers",
                        "Followers this process copies to, by its role: 'feed' (the leader feed process, 0) or "
                        "the shard's number", ["shard"])
STREAM_CONNECTED = Gauge("copytrader_stream_connected", "1 while connected to the stream server (shards only)")
STREAM_PUBLISHED = Counter("copytrader_stream_published_total",
                           "Leader order updates the stream server confirmed storing (the feed process)")
STREAM_UNPUBLISHED = Gauge("copytrader_stream_unpublished",
                           "Leader order updates the feed process stored and the stream server has not confirmed yet")
STREAM_RECEIVED = Counter("copytrader_stream_received_total",
                          "Stream messages a shard handled, by outcome: stored (in its inbox, then acknowledged), "
                          "duplicate (stored before), retried (storage down: delivered again later), "
                          "unreadable (counted as malformed too)", ["outcome"])
UP = Gauge("copytrader_up", "1 while the copier runs")
READY = Gauge("copytrader_ready", "1 while the copier can copy: running, with storage taking writes")

# Label values known before any event happens; series of other values appear with their first event.
ROLES = ("leader", "follower")
UPDATE_SOURCES = ("socket", "book")
MALFORMED_REASONS = ("bad_json", "bad_shape", "bad_field", "missing_field")
FOLLOWER_OPERATIONS = {"place": "placed", "modify": "modified", "cancel": "cancelled"}
COMMON_SKIPS = ("leader_rejected", "unknown_instrument", "size_rounds_to_zero", "insufficient_capital",
                "kill_switch_on", "account_suspended", "preexisting_order", "follower_paused",
                "above_freeze_quantity")
ALERT_KEYS = (("critical", "kill_switch"), ("critical", "auth"), ("critical", "escalated"), ("error", "dlq"),
              ("warning", "lag"), ("warning", "divergence"))
ANOMALY_KINDS = ("follower_filled_first",)
ROUTER_MAILBOXES = ("router", "order_max")
SUPER_LEGS = ("ENTRY_LEG", "TARGET_LEG", "STOP_LOSS_LEG")


_series: dict[tuple[int, tuple[str, ...]], Any] = {}


def series(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: the hot path counts every copy, and `labels` checks
    and locks each time. Only for a metric whose series are never removed."""
    key = (id(metric), labels)
    found = _series.get(key)
    if found is None:
        found = _series[key] = metric.labels(*labels)
    return found


def create_series(leaders: Sequence[str], followers: Sequence[str], actor_kinds: Iterable[str], *,
                  order_events: Iterable[str] = (), error_codes: Iterable[str] = (),
                  failure_reasons: Iterable[str] = (), price_sources: Iterable[str] = ()) -> None:
    """Create every labelled series the copier knows of at zero, before anything happens.

    A labelled series otherwise appears only with its first event: dashboards show "No data" on a
    healthy system, and increase() cannot see the event that created the series. The label values
    that other layers define (order events, the broker's error codes and failure reasons, price
    sources) are handed in by the wiring: this catalogue imports none of them."""
    accounts = [*leaders, *followers]
    for leader in leaders:
        OWN_COPIES_IGNORED.labels(leader)
    events, actor_kinds, error_codes = list(order_events), list(actor_kinds), list(error_codes)
    failure_reasons = list(failure_reasons)
    for kind in ["placed", *(e.lower() for e in events)]:
        LEADER_EVENTS.labels(kind)
    for role in ROLES:
        for family in (DUPLICATE_UPDATES, STALE_UPDATES, FILLS):
            family.labels(role)
        for source in UPDATE_SOURCES:
            INBOUND_UPDATES.labels(role, source)
        for reason in MALFORMED_REASONS:
            MALFORMED_MESSAGES.labels(role, reason)
        for event in events:
            INVALID_TRANSITIONS.labels(role, event)
    for account in accounts:
        FEED_CONNECTED.labels(account)
        FEED_RECONNECTS.labels(account)
        BACKFILLED.labels(account)
        OPEN_ORDERS.labels(account)
        BROKER_LATENCY.labels(account, "order_book")
        for code in error_codes:
            BROKER_ERRORS.labels(account, "order_book", code)
    for follower in followers:
        for family in (REPLICATION_LATENCY, SLIPPAGE, FOLLOWER_LAG, LAG_ALERTS, RATE_LIMITED, SLICED_COPIES,
                       COPY_SLICES, LEGS_HELD):
            family.labels(follower)
        for reason in COMMON_SKIPS:
            SKIPS.labels(follower, reason)
        for operation, done in FOLLOWER_OPERATIONS.items():
            FOLLOWER_ORDERS.labels(follower, operation, done)
            FOLLOWER_ORDERS.labels(follower, operation, "failed")
            BROKER_LATENCY.labels(follower, operation)
            RETRIES.labels(follower, operation)
            for reason in failure_reasons:
                FOLLOWER_FAILURES.labels(follower, operation, reason)
            for code in error_codes:
                BROKER_ERRORS.labels(follower, operation, code)
    for kind in actor_kinds:
        ACTOR_RESTARTS.labels(kind)
    for actor in ROUTER_MAILBOXES:
        MAILBOX_DEPTH.labels(actor)
    for level, key in ALERT_KEYS:
        ALERTS.labels(level, key)
    for kind in ANOMALY_KINDS:
        ANOMALIES.labels(kind)
    for follower in followers:
        UNKNOWN_OUTCOMES.labels(follower)
        FOLLOWER_PAUSED.labels(follower)
    for account in accounts:
        ORDERS_EXPIRED_AT_START.labels(account)
        for outcome in ("ok", "failed"):
            QUOTE_REQUESTS.labels(account, outcome)
    for outcome in ("asked", "failed", "unresolved"):
        LEADER_REREADS.labels(outcome)
    for result in ("hit", "miss"):
        QUOTE_LOOKUPS.labels(result)
    for source in price_sources:
        REFERENCE_PRICES.labels(source)
    for kind in actor_kinds:
        POISON_MESSAGES.labels(kind)
    for follower in followers:
        for leg in SUPER_LEGS:
            for operation in ("modify", "cancel"):
                for outcome in ("done", "failed"):
                    SUPER_LEG_CALLS.labels(follower, leg, operation, outcome)
    for outcome in ("changed", "unchanged", "failed"):
        SUPER_ORDER_READS.labels(outcome)


_server_lock = threading.Lock()


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Start the /metrics endpoint; returns the bound port (0 picks a free one)."""
    with _server_lock:
        server, _thread = start_http_server(port, addr=host)
        return server.server_port
