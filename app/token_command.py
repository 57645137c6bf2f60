"""`python run.py token ACCOUNT`: give an account a new access token without restarting the copier.

The token is read from standard input (never from the command line, where `ps` and the shell's
history would show it), checked with the broker (`GET /fundlimit`) and stored encrypted in the
token file (storage/tokens.py). A running copier picks it up within a second or two and resumes
the account if it was paused; the next start uses it too, as long as the config still holds the
token it replaces.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from copier.config import ConfigError, load
from observability.logs import register_secret
from storage.tokens import TokenFile, TokenFileError, fingerprint, token_file_path


def register(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser("token", help="give an account a new access token (read from standard input); "
                                         "a running copier uses it at once")
    token.add_argument("account", help="leader, or a follower's name")
    token.set_defaults(handler=cmd_token)


def _token_storages(args: argparse.Namespace, config) -> list[str]:
    """Whose token files: the copier's; in shard mode, the process `--shard` names, or by default the
    follower's shard, or for the leader every process whose storage is on this machine (each reads
    the leader's orders with its token)."""
    from app.shard_commands import role_config

    if not config.shards or args.shard is not None:
        return [role_config(args, config).storage.path]
    from copier import shards

    if args.account != "leader":
        return [shards.role_storage_path(config.storage.path, shards.assignment(config)[args.account])]
    paths = [shards.role_storage_path(config.storage.path, role) for role in (shards.FEED, *range(config.shards))]
    here = [path for path in paths if Path(path).exists()]
    for path in paths:
        if path not in here:
            print(f"token: {path} is not on this machine: give the leader's token there too (token leader)",
                  file=sys.stderr)
    if not here:
        raise ConfigError("no process of this config keeps its storage on this machine: run `token leader` where "
                          "the feed process and the shards run")
    return here


def cmd_token(args: argparse.Namespace) -> int:
    from copier.accounts import START_REFUSED_EXIT, refusal
    from broker.gateway import DhanGateway

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return START_REFUSED_EXIT
    accounts = {a.name: a for a in [*config.all_leaders, *config.followers]}
    account = accounts.get(args.account)
    if account is None:
        print(f"token: no account {args.account!r} in {args.config} (accounts: {', '.join(accounts)})", file=sys.stderr)
        return 2
    try:
        paths = [token_file_path(storage_path) for storage_path in _token_storages(args, config)]
        token_files = [TokenFile.from_environment(path) for path in paths]
    except ConfigError as exc:
        print(f"token: {exc}", file=sys.stderr)
        return 2
    except TokenFileError as exc:
        print(f"token: {exc}", file=sys.stderr)
        return 2
    token = (getpass.getpass(f"new access token for {account.name}: ") if sys.stdin.isatty()
             else sys.stdin.readline()).strip()
    if not token:
        print("token: no token on standard input", file=sys.stderr)
        return 2
    register_secret(token)
    answer = DhanGateway(account.name, account.client_id, token, account.api_base_url,
                         config.broker.timeout_seconds).fund_limit()
    if answer.error is not None:
        print(f"token: not stored: {refusal(account, 'standard input', answer.error)}", file=sys.stderr)
        return 1
    for path, token_file in zip(paths, token_files):
        try:
            token_file.save(account.client_id, account.name, token, fingerprint(account.access_token))
        except (OSError, TokenFileError) as exc:
            print(f"token: not stored in {path}: {exc}", file=sys.stderr)
            return 1
        print(f"{account.name}: the broker accepts the new token; stored encrypted in {path} "
              "(a running copier uses it within seconds)")
    return 0
