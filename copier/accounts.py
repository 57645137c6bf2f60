"""Start-up account checks: which token each account uses, and whether its broker accepts it.

Each account uses the newest of its tokens: the configured one, or a renewed one stored encrypted
(storage/tokens.py) that superseded it. Before anything is copied, every account is asked for its
funds (`GET /fundlimit`, which sizing reads anyway), all at once.

- The leader is what everything follows: a refused leader token, or any account's broker that
  cannot be reached (usually a wrong `api_base_url`), refuses the start with one line naming the
  account and where its token came from, and exit status START_REFUSED_EXIT.
- A follower whose token is refused starts paused (a critical alert names it and its token's
  source). Refusing the whole start would also stop copying to every follower whose token works;
  the paused follower's missed copies are recorded skips, and it resumes by itself once it has a
  working token (`python run.py token NAME` hands one to the running copier).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from actors.messages import is_leader, leader_label
from broker.errors import BrokerError, ErrorKind
from broker.gateway import Answer, DhanGateway
from copier.config import AccountConfig, Config, FollowerConfig
from observability.logs import register_secret
from storage import Store
from storage.tokens import TOKEN_KEY_ENV, TokenFile, TokenFileError, key_from_environment, token_file_path

START_REFUSED_EXIT = 2  # every refusal to start, config errors included (README: "Exit status")
CHECK_ATTEMPTS = 2  # a transient failure (connection refused, timeout, DH-908) is asked again once
CHECK_RETRY_SECONDS = 1.0


class StartRefused(Exception):
    """One line for the operator (never a token); the process exits with START_REFUSED_EXIT."""


@dataclass(frozen=True)
class AccountToken:
    account: str
    client_id: str
    token: str = field(repr=False)
    source: str  # "config file x.yaml", "environment variable NAME", "stored renewed token (path)"
    configured: str = field(repr=False)  # the config's token: what a renewal supersedes


@dataclass
class Accounts:
    """What start-up decided: a gateway per account over its chosen token, and the paused followers."""

    gateways: dict[str, DhanGateway]
    tokens: dict[str, AccountToken]
    paused: dict[str, str]  # follower -> why (its token refused at start)
    token_file: TokenFile | None
    funds: dict[str, Answer] = field(default_factory=dict)  # the check's answers: sizing's first reading


def _who(account: AccountConfig) -> str:
    return f"{leader_label(account.name)} (client {account.client_id})" if is_leader(account.name) else \
        f"follower {account.name} (client {account.client_id})"


def choose_tokens(config: Config, accounts: Sequence[AccountConfig] | None = None
                  ) -> tuple[dict[str, AccountToken], TokenFile | None]:
    """Every account's token (of `accounts` only, when given), and the file of renewed tokens."""
    path = token_file_path(config.storage.path)
    try:
        key = key_from_environment()
        register_secret(key.decode() if key else None)  # the key is as secret as the tokens
        token_file = TokenFile(path, key) if key else None
        if token_file is None and path.exists():
            raise StartRefused(f"{path} holds renewed tokens but the environment variable {TOKEN_KEY_ENV} is not "
                               "set: set it to the key they were stored with, or delete the file to use the "
                               "configured tokens")
        stored = token_file.load() if token_file else {}
    except TokenFileError as exc:
        raise StartRefused(str(exc)) from None
    tokens: dict[str, AccountToken] = {}
    for account in accounts if accounts is not None else [*config.all_leaders, *config.followers]:
        entry = stored.get(account.client_id)
        if entry is not None and entry.supersedes(account.access_token):
            token, source = entry.token, f"stored renewed token ({path})"
        else:
            token, source = account.access_token, account.token_source
        register_secret(token)  # before anything could log it
        tokens[account.name] = AccountToken(account.name, account.client_id, token, source, account.access_token)
    return tokens, token_file


def _check(gateway: DhanGateway) -> Answer:
    """The account's funds, or the error that says why the broker did not give them."""
    answer = gateway.fund_limit()
    for _ in range(CHECK_ATTEMPTS - 1):
        if answer.error is None or not answer.error.transient:
            break
        time.sleep(CHECK_RETRY_SECONDS)
        answer = gateway.fund_limit()
    return answer


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def refusal(account: AccountConfig, source: str, error: BrokerError) -> str:
    """What went wrong with one account, in one line."""
    if error.kind == ErrorKind.AUTH:
        return f"{_who(account)}: the broker refused the access token from {source} ({error.code}: " \
               f"{_one_line(error.message)})"
    if error.kind == ErrorKind.NETWORK:
        return f"{_who(account)}: the broker at {account.api_base_url} is unreachable ({_one_line(error.message)})"
    return f"{_who(account)}: the broker at {account.api_base_url} answered the account check with " \
           f"{error.code}: {_one_line(error.message)}"


def prepare_accounts(config: Config) -> Accounts:
    """Choose every account's token and check it with the broker; raise StartRefused, or return
    the accounts with the followers to start paused."""
    tokens, token_file = choose_tokens(config)
    accounts = [*config.all_leaders, *config.followers]
    gateways = {a.name: DhanGateway(a.name, a.client_id, tokens[a.name].token, a.api_base_url, config.broker.timeout_seconds)
                for a in accounts}
    with ThreadPoolExecutor(max_workers=min(16, len(accounts)), thread_name_prefix="account-check") as pool:
        answers = dict(zip([a.name for a in accounts], pool.map(lambda a: _check(gateways[a.name]), accounts)))
    paused: dict[str, str] = {}
    for account in accounts:  # the leaders first: their refusal is the one to report
        error = answers[account.name].error
        if error is None:
            continue
        source = tokens[account.name].source
        if error.kind == ErrorKind.AUTH and not is_leader(account.name):
            paused[account.name] = f"the broker refused its access token from {source} ({error.code})"
            continue
        raise StartRefused(refusal(account, source, error))
    return Accounts(gateways, tokens, paused, token_file, answers)


def check_follower(config: Config, follower: FollowerConfig) -> tuple[DhanGateway, AccountToken, Answer]:
    """A follower added while the copier runs, checked as at start: its token chosen, its funds
    asked. Raises StartRefused (one line) when its broker refuses the token or cannot be reached:
    an operator adding it is there to fix it, so it is not added paused."""
    tokens, _file = choose_tokens(config, [follower])
    token = tokens[follower.name]
    gateway = DhanGateway(follower.name, follower.client_id, token.token, follower.api_base_url,
                          config.broker.timeout_seconds)
    answer = _check(gateway)
    if answer.error is not None:
        raise StartRefused(refusal(follower, token.source, answer.error))
    return gateway, token, answer


ACCOUNTS_SETTING = "accounts"


def record_accounts(store: Store, config: Config, followers: Iterable[AccountConfig] | None = None) -> None:
    """Record the accounts and URLs the copier uses (never tokens), for operator commands in other
    processes: in paper mode they exist only in the running process. `followers`: those it copies
    to now, when they changed since it started."""
    accounts = [*config.all_leaders, *(config.followers if followers is None else followers)]
    store.settings.set(ACCOUNTS_SETTING, json.dumps([
        {"name": a.name, "client_id": a.client_id, "api_base_url": a.api_base_url,
         "order_update_url": a.order_update_url} for a in accounts]))


def recorded_accounts(store: Store) -> dict[str, dict[str, str]]:
    """What `record_accounts` stored, by account name ({} when no copier has started)."""
    return {a["name"]: a for a in json.loads(store.settings.get(ACCOUNTS_SETTING) or "[]")}
