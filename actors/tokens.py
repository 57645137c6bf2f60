"""The token actor (B.6): renews every account's access token before it expires, when configured
(`tokens.renew_every_minutes`). Dhan tokens live about 24 hours and `/RenewToken` exchanges a valid
token for a new one (the old expires), so renewal must happen while the token still works; a
token already refused can only be replaced by the user, and that is alerted naming the account.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from actors.messages import LEADER, ResumeAccount, Tick
from app.logs import register_secret
from broker.gateway import DhanGateway
from supervisors import Address, Supervised

log = logging.getLogger(__name__)


class TokenActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, gateways: dict[str, DhanGateway],
                 sizing: Address, alert: Callable[[str, str, str], None], every_seconds: float) -> None:
        super().__init__(address, supervisor)
        self.gateways, self.sizing, self.alert = gateways, sizing, alert
        self.every_seconds = every_seconds

    def started(self) -> None:
        if self.every_seconds > 0:
            self.every(self.every_seconds, Tick("renew"), "token-renewal")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick) or message == "renew":
            return {account: self._renew(account, gateway) for account, gateway in self.gateways.items()}
        return None

    def _renew(self, account: str, gateway: DhanGateway) -> bool:
        answer = gateway.renew_token()
        if not answer.ok:
            level = "critical" if answer.error and answer.error.kind.value == "auth" else "warning"
            self.alert(level, f"renew:{account}", f"{account}: access token not renewed: {answer.error}")
            return False
        token = answer.data
        register_secret(token)  # before anything could log it
        gateway.set_token(token)  # the REST calls and the socket's next login use it
        if account != LEADER:
            self.sizing.tell(ResumeAccount(account))
        log.info("%s: access token renewed", account)
        return True
