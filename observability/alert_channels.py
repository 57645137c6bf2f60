"""Alert channels beyond the log: a generic JSON webhook and a Telegram bot.

Each channel is a callable `(level, key, message) -> None` that `observability.alerts.Alerts(channels=[...])`
calls after its cooldown has let an alert through. A channel never raises: an alert that cannot
be delivered is logged as a warning and counted (`failures`), because the caller is usually in
the middle of protecting money and must not be taken down by a chat service being down.

Secrets never reach the log: the bot token is registered with `observability.logs.register_secret` and
every warning is passed through `observability.logs.redact`; webhook URLs (which often carry a token in
their path) are logged by scheme and host only, never registered (a short path like "/alerts"
would then be masked in every log line).

By default a channel sends synchronously, bounded by `timeout`. With `background=True` it hands
the alert to one daemon thread with a bounded queue, so a slow endpoint delays nobody; when the
queue is full the alert is dropped with a warning. `flush(timeout)` waits for the queue to drain.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from observability.logs import redact, register_secret

log = logging.getLogger("copytrader.alerts")

TELEGRAM_MAX_TEXT = 4096  # Telegram's limit on one message's text


def _iso_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


class _HttpChannel:
    name = "channel"

    def __init__(self, timeout: float, background: bool, queue_size: int) -> None:
        self.timeout = timeout
        self.sent = 0
        self.failures = 0
        self._queue: queue.Queue[tuple[str, str, str, float]] | None = None
        if background:
            self._queue = queue.Queue(maxsize=queue_size)
            threading.Thread(target=self._drain, name=f"alert-{self.name}", daemon=True).start()

    # -- the callable Alerts uses ----------------------------------------------------------------
    def __call__(self, level: str, key: str, message: str) -> None:
        ts = time.time()
        if self._queue is None:
            self._deliver(level, key, message, ts)
            return
        try:
            self._queue.put_nowait((level, key, message, ts))
        except queue.Full:
            self.failures += 1
            log.warning("%s alert channel: queue full, dropped alert %s", self.name, redact(key))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert has been attempted; True if it drained in time."""
        if self._queue is None:
            return True
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            with self._queue.all_tasks_done:
                self._queue.all_tasks_done.wait(max(0.0, min(0.05, deadline - time.monotonic())))
        return True

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                self._deliver(*item)
            finally:
                self._queue.task_done()

    # -- delivery ------------------------------------------------------------------------------
    def _request(self, level: str, key: str, message: str, ts: float) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _where(self) -> str:
        raise NotImplementedError

    def _scrub(self, text: str) -> str:
        """Text safe to log: registered secrets and token-shaped strings masked."""
        return redact(text)

    def _deliver(self, level: str, key: str, message: str, ts: float) -> None:
        try:
            url, payload = self._request(level, key, message, ts)
            body = json.dumps(payload).encode("utf-8")
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 (configured URL)
                answer.read()
            self.sent += 1
        except urllib.error.HTTPError as exc:
            self.failures += 1
            try:
                detail = exc.read(500).decode("utf-8", "replace")
            except Exception:
                detail = ""
            log.warning("%s alert to %s failed: HTTP %s %s", self.name, self._where(), exc.code, self._scrub(detail))
        except Exception as exc:  # never raise into the alerting code
            self.failures += 1
            log.warning("%s alert to %s failed: %s", self.name, self._where(), self._scrub(f"{type(exc).__name__}: {exc}"))


class WebhookChannel(_HttpChannel):
    """POST `{"level", "key", "message", "ts"}` as JSON to `url`; `ts` is ISO 8601 UTC."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 3.0, background: bool = False, queue_size: int = 100) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("webhook url must be http(s)://host/...")
        self.url = url
        self._host = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        super().__init__(timeout, background, queue_size)

    def _where(self) -> str:
        return self._host

    def _scrub(self, text: str) -> str:
        return redact(text.replace(self.url, self._host))  # the path may be the webhook's secret

    def _request(self, level: str, key: str, message: str, ts: float) -> tuple[str, dict[str, Any]]:
        return self.url, {"level": level, "key": key, "message": message, "ts": _iso_utc(ts)}


class TelegramChannel(_HttpChannel):
    """Telegram Bot API `sendMessage` to one chat: POST {api_base}/bot{token}/sendMessage with
    JSON `{"chat_id", "text"}`; text is "[LEVEL] message", cut to Telegram's 4096 characters."""

    name = "telegram"

    def __init__(self, bot_token: str, chat_id: str | int, api_base: str = "https://api.telegram.org",
                 timeout: float = 3.0, background: bool = False, queue_size: int = 100) -> None:
        if not bot_token:
            raise ValueError("telegram bot_token is empty")
        register_secret(bot_token)
        self._token = bot_token
        self.chat_id = chat_id
        self.api_base = api_base.rstrip("/")
        super().__init__(timeout, background, queue_size)

    def __repr__(self) -> str:  # the token must not leak through a repr either
        return f"TelegramChannel(chat_id={self.chat_id!r}, api_base={self.api_base!r})"

    def _where(self) -> str:
        return f"{self.api_base} chat {self.chat_id}"

    def _request(self, level: str, key: str, message: str, ts: float) -> tuple[str, dict[str, Any]]:
        text = f"[{level.upper()}] {message}"
        if len(text) > TELEGRAM_MAX_TEXT:
            text = text[: TELEGRAM_MAX_TEXT - 1] + "…"
        return f"{self.api_base}/bot{self._token}/sendMessage", {"chat_id": self.chat_id, "text": text}
