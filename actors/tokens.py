"""The token actor: the one owner of every account's access token while the copier runs.

- Renewal, when configured: followers every `tokens.renew_every_minutes`, the leader only every
  `tokens.renew_leader_every_minutes` (renewing logs the person out of their other tools). Dhan
  tokens live about 24 hours and `/RenewToken` exchanges a valid token for a new one (the old
  expires at once), so each renewed token is stored encrypted (storage/tokens.py) before anything
  else: a restart then starts from it, not from the dead configured one.
- A refused token (`AuthRefused`, from order actors and feeds): the account is paused (a follower's
  copies become recorded skips), a critical alert names it, and the broker is asked again with a
  capped backoff; once it accepts the account's token, the account resumes by itself.
- New tokens from outside: the token file is watched, so a token an operator stores
  (`python run.py token NAME`) is used at once, without a restart.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from actors.messages import (AuthRefused, CheckTokens, Reconnect, RenewTokens, ResumeAccount, SuspendAccount, is_leader,
                             leader_label)
from observability.logs import register_secret
from broker.errors import ErrorKind
from broker.gateway import DhanGateway
from storage.tokens import TokenFile, TokenFileError, fingerprint
from supervisors import Address, Supervised, Timers

log = logging.getLogger(__name__)

PROBE_INITIAL = 1.0  # seconds before a paused account's token is first tried again; doubles
PROBE_MAX = 60.0
CHECK_SECONDS = 1.0  # how often paused accounts and the token file are looked at


def _who(account: str) -> str:
    return leader_label(account) if is_leader(account) else f"follower {account}"


class TokenActor(Supervised):
    def __init__(self, address: Address, supervisor: Address | None, gateways: dict[str, DhanGateway],
                 sizing: Address, alert: Callable[[str, str, str], None], every_seconds: float,
                 leader_every_seconds: float = 0.0, *, timers: Timers, token_file: TokenFile | None = None,
                 configured: dict[str, str] | None = None, paused: dict[str, str] | None = None,
                 feeds: dict[str, Address] | None = None, probe_initial: float = PROBE_INITIAL,
                 probe_max: float = PROBE_MAX, check_seconds: float = CHECK_SECONDS) -> None:
        super().__init__(address, supervisor)
        self.gateways, self.sizing, self.alert, self.timers = gateways, sizing, alert, timers
        self.every_seconds, self.leader_every_seconds = every_seconds, leader_every_seconds
        self.token_file = token_file
        self._configured = configured or {}  # account -> its configured token, which renewals supersede
        self.feeds = feeds or {}
        self.probe_initial, self.probe_max, self.check_seconds = probe_initial, probe_max, check_seconds
        self.paused: dict[str, str] = dict(paused or {})  # account -> what was refused
        self._next_probe = {account: time.monotonic() + probe_initial for account in self.paused}
        self._delay: dict[str, float] = {}
        self._stamp: tuple[int, int] | None = None
        self._applied: dict[str, float] = {}  # account -> saved_at of the stored token known to it

    def __repr__(self) -> str:
        return "TokenActor()"

    def started(self) -> None:
        if self.every_seconds > 0:
            self.timers.every(self.every_seconds, self.address, RenewTokens(leader=False), owner=self.actor_ref)
        if self.leader_every_seconds > 0:
            self.timers.every(self.leader_every_seconds, self.address, RenewTokens(leader=True), owner=self.actor_ref)
        if self.token_file is not None:
            self._stamp = self.token_file.stamp()
            stored = self._load()
            self._applied = {account: stored[g.client_id].saved_at for account, g in self.gateways.items()
                             if g.client_id in stored}
        self.timers.every(self.check_seconds, self.address, CheckTokens(), owner=self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AuthRefused):
            self._pause(message.account, message.detail)
        elif isinstance(message, CheckTokens):
            self._watch_file()
            self._probe_paused()
        elif isinstance(message, RenewTokens):
            return {account: self._renew(account, gateway) for account, gateway in self.gateways.items()
                    if is_leader(account) == message.leader}
        return None

    # -- a refused token -----------------------------------------------------------------------------
    def _pause(self, account: str, detail: str) -> None:
        if account in self.paused or account not in self.gateways:
            return
        self.paused[account] = detail
        self._next_probe[account] = time.monotonic() + self._delay.setdefault(account, self.probe_initial)
        if not is_leader(account):
            self.sizing.tell(SuspendAccount(account, f"the broker refused its access token ({detail})"))
            self.alert("critical", f"auth:{account}",
                       f"follower {account}: the broker refused its access token ({detail}); copying to it is "
                       f"paused until it has a working token (python run.py token {account})")
        else:
            self.alert("critical", f"auth:{account}",
                       f"{_who(account)}: the broker refused its access token ({detail}); nothing of its orders is "
                       f"copied until it has a working token (python run.py token {account})")

    def _probe_paused(self) -> None:
        now = time.monotonic()
        for account in [a for a in self.paused if self._next_probe.get(a, 0.0) <= now]:
            answer = self.gateways[account].fund_limit()
            if answer.ok:
                self._resume(account)
                continue
            delay = self._delay[account] = min(self._delay.get(account, self.probe_initial) * 2, self.probe_max)
            self._next_probe[account] = time.monotonic() + delay * random.uniform(1.0, 1.2)
            log.debug("%s: token still refused (%s); next try in %.0fs", account, answer.error, delay)

    def _resume(self, account: str) -> None:
        self.paused.pop(account, None)
        if not is_leader(account):
            self.sizing.tell(ResumeAccount(account))
        self.alert("info", f"auth_ok:{account}",
                   f"{_who(account)}: the broker accepts its access token again; copying resumed")
        feed = self.feeds.get(account)
        if feed is not None:
            feed.tell(Reconnect())  # its socket may be waiting out a long backoff

    def _token_changed(self, account: str) -> None:
        """A new token was set: a paused account tries it at the next check, not after its backoff."""
        self._delay.pop(account, None)
        if account in self.paused:
            self._next_probe[account] = 0.0

    # -- tokens from the file ----------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        assert self.token_file is not None
        try:
            return self.token_file.load()
        except (TokenFileError, OSError) as exc:
            self.alert("error", "token_file", f"stored tokens unreadable: {exc}")
            return {}

    def _watch_file(self) -> None:
        if self.token_file is None:
            return
        stamp = self.token_file.stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        stored = self._load()
        for account, gateway in self.gateways.items():
            entry = stored.get(gateway.client_id)
            if entry is None or entry.saved_at <= self._applied.get(account, 0.0):
                continue
            self._applied[account] = entry.saved_at
            if entry.token != gateway.current_token():
                register_secret(entry.token)
                gateway.set_token(entry.token)
                log.info("%s: using the access token stored for it at %s", account,
                         time.strftime("%H:%M:%S", time.localtime(entry.saved_at)))
                self._token_changed(account)

    # -- renewal -------------------------------------------------------------------------------------
    def _renew(self, account: str, gateway: DhanGateway) -> bool:
        if account in self.paused:
            return False  # a refused token cannot be renewed; it waits for a new one
        answer = gateway.renew_token()
        if not answer.ok:
            if answer.error is not None and answer.error.kind == ErrorKind.AUTH:
                self._pause(account, f"{answer.error.code} when renewing it")
            else:
                self.alert("warning", f"renew:{account}", f"{account}: access token not renewed: {answer.error}")
            return False
        token = answer.data
        register_secret(token)  # before anything could log it
        gateway.set_token(token)  # the REST calls and the socket's next login use it
        self._store(account, gateway, token)
        return True

    def _store(self, account: str, gateway: DhanGateway, token: str) -> None:
        """The old token is dead from now on: without the stored one a restart could not log in."""
        if self.token_file is None:
            log.info("%s: access token renewed", account)
            return
        try:
            entry = self.token_file.save(gateway.client_id, account, token,
                                         fingerprint(self._configured.get(account, "")))
        except (OSError, TokenFileError) as exc:
            self.alert("critical", f"renew:{account}",
                       f"{_who(account)}: access token renewed but not stored ({exc}); after a restart it will "
                       f"need a new token (python run.py token {account})")
            return
        self._applied[account] = entry.saved_at  # the watcher then sees this entry as known
        log.info("%s: access token renewed and stored encrypted", account)
