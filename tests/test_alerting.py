"""Alerts from a running copier reach the configured webhook (a loopback server), once per key."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from storage import models as m
from tests.conftest import wait_until


def test_alerts_reach_the_configured_webhook_once_per_cooldown(make_rig):
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rig = make_rig(config={"alerts": {"webhook_url": f"http://127.0.0.1:{server.server_port}/hook"}})
        rig.exchange.reject_next(rig.follower_ids["f1"], error_code="DH-905", message="Invalid quantity", count=2)
        rig.place(quantity=10)
        rig.place(quantity=12, price=1420.0)  # a second dead letter within the cooldown
        wait_until(lambda: received, message="the webhook called")
        alert = received[0]
        assert alert["level"] == "error" and alert["key"] == "dlq:f1" and "Invalid quantity" in alert["message"]
        wait_until(lambda: rig.store.read(lambda: m.DeadLetter.select().count()) == 2,
                   message="two dead letters")
        assert len([a for a in received if a["key"] == "dlq:f1"]) == 1
    finally:
        server.shutdown()
