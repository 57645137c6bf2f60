"""Paper mode: start the embedded paper exchange, open the configured accounts on it, point the
config at its URLs and (for the demo) start the leader-activity generator."""
from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import Any

from copier.config import Config, FollowerConfig
from observability.logs import register_secret
from paper import AccountSpec, LeaderBot, PaperExchange

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PaperSetup:
    exchange: PaperExchange
    config: Config
    bot: LeaderBot | None = None

    def open_account(self, follower: FollowerConfig) -> FollowerConfig:
        """A follower added while the copier runs: its account on the paper exchange, as at start."""
        number = len(self.exchange.engine.accounts)  # the next made-up client id
        return _open_account(self.exchange, follower, number, follower.funds)

    def stop(self) -> None:
        if self.bot is not None:
            self.bot.stop()
        self.exchange.stop()


def _open_account(exchange: PaperExchange, acc: Any, number: int, funds: float) -> Any:
    """An account on the paper exchange for `acc` (its configured client id and token, or made up),
    and `acc` pointed at the exchange."""
    client_id = acc.client_id or str(1_000_000_001 + number)
    token = acc.access_token or f"paper-{secrets.token_hex(12)}"
    register_secret(token)
    exchange.add_account(AccountSpec(client_id=client_id, access_token=token, funds=funds))
    return acc.model_copy(update=dict(client_id=client_id, access_token=token, api_base_url=exchange.rest_url,
                                      order_update_url=exchange.ws_url))


def start_paper(config: Config, *, bot: bool | None = None) -> PaperSetup:
    exchange = PaperExchange(seed=config.paper.seed, session="open", port=config.paper.port).start()

    opened: dict[str, Any] = {}  # client id -> the account made for it: one account may lead and follow

    def account(acc: Any, number: int, funds: float) -> Any:
        made = opened.get(acc.client_id) if acc.client_id else None
        if made is not None:
            return acc.model_copy(update={k: getattr(made, k) for k in
                                          ("client_id", "access_token", "api_base_url", "order_update_url")})
        made = _open_account(exchange, acc, number, funds)
        opened[made.client_id] = made
        return made

    leader = account(config.leader, 0, config.paper.leader_funds)
    followers = tuple(account(f, i + 1, f.funds) for i, f in enumerate(config.followers))
    more = tuple(account(extra, len(followers) + i + 1, config.paper.leader_funds)
                 for i, extra in enumerate(config.leaders[1:]))
    config = config.model_copy(update=dict(leader=leader, followers=followers,
                                           leaders=(leader, *more) if config.leaders else ()))
    setup = PaperSetup(exchange, config)
    if config.paper.leader_bot if bot is None else bot:
        setup.bot = LeaderBot(exchange.rest_url, leader.client_id, leader.access_token, seed=config.paper.seed,
                              pace_seconds=config.paper.pace_seconds).start()
    log.info("paper exchange at %s (socket %s)", exchange.rest_url, exchange.ws_url)
    return setup
