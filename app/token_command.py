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

from copier.config import ConfigError, load
from observability.logs import register_secret
from storage.tokens import TokenFile, TokenFileError, fingerprint, token_file_path


def register(sub: argparse._SubParsersAction) -> None:
    token = sub.add_parser("token", help="give an account a new access token (read from standard input); "
                                         "a running copier uses it at once")
    token.add_argument("account", help="leader, or a follower's name")
    token.set_defaults(handler=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    from copier.accounts import START_REFUSED_EXIT, refusal
    from broker.gateway import DhanGateway

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return START_REFUSED_EXIT
    accounts = {a.name: a for a in [config.leader, *config.followers]}
    account = accounts.get(args.account)
    if account is None:
        print(f"token: no account {args.account!r} in {args.config} (accounts: {', '.join(accounts)})", file=sys.stderr)
        return 2
    path = token_file_path(config.storage.path)
    try:
        token_file = TokenFile.from_environment(path)
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
    try:
        token_file.save(account.client_id, account.name, token, fingerprint(account.access_token))
    except (OSError, TokenFileError) as exc:
        print(f"token: not stored: {exc}", file=sys.stderr)
        return 1
    print(f"{account.name}: the broker accepts the new token; stored encrypted in {path} "
          "(a running copier uses it within seconds)")
    return 0
