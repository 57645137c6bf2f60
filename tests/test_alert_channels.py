"""Alert channels against a loopback HTTP server: the exact request sent, failures that never raise,
tokens that never reach the log, and the alert manager's cooldown in front of them."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from observability.alert_channels import TELEGRAM_MAX_TEXT, TelegramChannel, WebhookChannel
from observability.alerts import Alerts

BOT_TOKEN = "123456789:AAH-test-bot-token-value-xyz"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Loopback:
    """An HTTP server on 127.0.0.1 that records every request and answers as told."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    answer: bytes = b'{"ok": true}'
    hold: threading.Event | None = None  # when set, requests wait on it before answering
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout), \
                f"expected {count} requests, got {len(self.requests)}"
            return list(self.requests)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    state: Loopback

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.arrived:
                state.requests.append(Received(self.command, self.path, dict(self.headers), body))
                state.arrived.notify_all()
            if state.hold is not None:
                state.hold.wait(10)
            try:
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(state.answer)))
                self.end_headers()
                self.wfile.write(state.answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the channel gave up on a held answer, as its test means it to

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Loopback(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- webhook --------------------------------------------------------------------------------------

def test_webhook_posts_the_alert_as_json(loopback: Loopback) -> None:
    channel = WebhookChannel(f"{loopback.url}/hooks/copytrader", timeout=3)
    before = time.time()
    assert channel("error", "token_expired:f1", "f1: access token expired (DH-901)") is None
    [request] = loopback.wait_for(1)
    assert request.method == "POST" and request.path == "/hooks/copytrader"
    assert request.headers["Content-Type"] == "application/json"
    payload = request.json()
    assert set(payload) == {"level", "key", "message", "ts"}
    assert payload["level"] == "error" and payload["key"] == "token_expired:f1"
    assert payload["message"] == "f1: access token expired (DH-901)"
    assert payload["ts"].endswith("Z")
    assert time.strftime("%Y-%m-%dT", time.gmtime(before)) in payload["ts"]
    assert (channel.sent, channel.failures) == (1, 0)


def test_webhook_failure_is_logged_not_raised(loopback: Loopback, caplog: pytest.LogCaptureFixture) -> None:
    loopback.status, loopback.answer = 500, b'{"error": "down"}'
    channel = WebhookChannel(f"{loopback.url}/secret-path-abcdef123456")
    with caplog.at_level(logging.WARNING, logger="copytrader.alerts"):
        channel("warning", "k", "m")
    assert channel.failures == 1
    assert "HTTP 500" in caplog.text and "down" in caplog.text
    assert "secret-path-abcdef123456" not in caplog.text  # only scheme and host are logged


def closed_port() -> int:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens on this port now
    return port


def test_unreachable_webhook_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{closed_port()}/x", timeout=1)
    with caplog.at_level(logging.WARNING, logger="copytrader.alerts"):
        channel("critical", "k", "m")
    assert channel.failures == 1 and "failed" in caplog.text


def test_slow_webhook_is_bounded_by_the_timeout(loopback: Loopback) -> None:
    loopback.hold = threading.Event()
    channel = WebhookChannel(loopback.url, timeout=0.3)
    started = time.monotonic()
    channel("warning", "k", "m")
    assert time.monotonic() - started < 3
    assert channel.failures == 1


def test_background_delivery_does_not_block_the_caller(loopback: Loopback) -> None:
    loopback.hold = threading.Event()
    channel = WebhookChannel(loopback.url, timeout=5, background=True)
    started = time.monotonic()
    channel("info", "a", "first")
    channel("info", "b", "second")
    assert time.monotonic() - started < 1  # the server holds every answer
    loopback.wait_for(1)
    loopback.hold.set()
    assert channel.flush(5)
    assert [r.json()["key"] for r in loopback.wait_for(2)] == ["a", "b"]
    assert channel.sent == 2


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        WebhookChannel("ftp://example.com/x")


# -- telegram -------------------------------------------------------------------------------------

def test_telegram_sends_message_to_the_bot_api(loopback: Loopback) -> None:
    channel = TelegramChannel(BOT_TOKEN, chat_id="-1001234567890", api_base=loopback.url + "/")
    channel("critical", "kill_switch", "Kill switch ON: daily loss limit reached for f1")
    [request] = loopback.wait_for(1)
    assert request.method == "POST"
    assert request.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {"chat_id": "-1001234567890",
                              "text": "[CRITICAL] Kill switch ON: daily loss limit reached for f1"}
    assert BOT_TOKEN not in repr(channel)


def test_telegram_text_is_cut_to_the_api_limit(loopback: Loopback) -> None:
    channel = TelegramChannel(BOT_TOKEN, chat_id=42, api_base=loopback.url)
    channel("info", "k", "x" * 10_000)
    text = loopback.wait_for(1)[0].json()["text"]
    assert len(text) == TELEGRAM_MAX_TEXT and text.endswith("…")


def test_telegram_failure_never_logs_the_token(loopback: Loopback, caplog: pytest.LogCaptureFixture) -> None:
    loopback.status = 401
    loopback.answer = json.dumps({"ok": False, "error_code": 401,
                                  "description": f"Unauthorized: bot{BOT_TOKEN} rejected"}).encode()
    channel = TelegramChannel(BOT_TOKEN, chat_id=42, api_base=loopback.url)
    with caplog.at_level(logging.DEBUG):
        channel("error", "k", "m")
    loopback.wait_for(1)
    assert channel.failures == 1
    assert "HTTP 401" in caplog.text and "Unauthorized" in caplog.text
    assert BOT_TOKEN not in caplog.text


def test_telegram_unreachable_never_logs_the_token(caplog: pytest.LogCaptureFixture) -> None:
    channel = TelegramChannel(BOT_TOKEN, chat_id=42, api_base=f"http://127.0.0.1:{closed_port()}", timeout=1)
    with caplog.at_level(logging.DEBUG):
        channel("error", "k", "m")
    assert channel.failures == 1
    assert BOT_TOKEN not in caplog.text


# -- through the alert manager --------------------------------------------------------------------

def test_alerts_fan_out_to_channels_and_cooldown_suppresses_repeats(loopback: Loopback) -> None:
    webhook = WebhookChannel(f"{loopback.url}/hook")
    telegram = TelegramChannel(BOT_TOKEN, chat_id=7, api_base=loopback.url)
    alerts = Alerts(channels=[webhook, telegram], cooldown_seconds=60)
    assert alerts("error", "market_closed:NSE_EQ", "copy skipped: market closed") is True
    assert alerts("error", "market_closed:NSE_EQ", "copy skipped: market closed") is False
    assert alerts("warning", "risk:f1", "order value limit") is True
    received = loopback.wait_for(4)
    assert [r.path for r in received] == ["/hook", f"/bot{BOT_TOKEN}/sendMessage"] * 2
    assert [r.json().get("key") for r in received[::2]] == ["market_closed:NSE_EQ", "risk:f1"]
    # the suppressed repeat was never sent: both channels are synchronous, so all sends are done
    assert (webhook.sent, telegram.sent) == (2, 2) and len(loopback.requests) == 4


def test_a_failing_channel_does_not_stop_the_others(loopback: Loopback) -> None:
    dead = WebhookChannel(f"http://127.0.0.1:{closed_port()}/unreachable", timeout=0.5)
    live = WebhookChannel(loopback.url)
    assert Alerts(channels=[dead, live], cooldown_seconds=0)("error", "k", "m") is True
    assert len(loopback.wait_for(1)) == 1 and dead.failures == 1
