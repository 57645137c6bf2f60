"""Operator commands that steer followers while the copier runs: `follower pause|resume|set|reset|
add|remove|list|history`, `reload` and `square-off`.

A command for a running copier is queued in its storage and carried out there by the follower
control actor (actors/follower_control.py); the command waits for its answer and prints it.
Without a running copier, pause, resume (without catch-up) and sizing changes are stored, and the
next start applies them; the rest needs the running copier (its accounts, sockets and order actors).
Exit status: 0 done, 1 not done (the copier refused it, did not answer, or is not running), 2 bad
input (an unknown follower, an invalid sizing value)."""
from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

import yaml

from copier.config import ConfigError

TIMEOUTS = {"pause": 20.0, "resume": 20.0, "set": 20.0, "reset": 20.0, "add": 60.0, "remove": 120.0,
            "reload": 120.0, "square-off": 330.0}


def register(sub: argparse._SubParsersAction) -> None:
    follower = sub.add_parser("follower", help="pause, resume or resize a follower while the copier runs; add or "
                                               "remove one from the config file; list them; their history")
    actions = follower.add_subparsers(dest="action", required=True, metavar="ACTION")
    pause = actions.add_parser("pause", help="copy nothing new to it (each leader order a recorded skip)")
    pause.add_argument("name")
    pause.add_argument("--reason", default="", help="recorded with the pause and in every skip it causes")
    resume = actions.add_parser("resume", help="copy new leader orders to it again")
    resume.add_argument("name")
    resume.add_argument("--catch-up", action="store_true",
                        help="also copy the leader orders skipped while it was paused that are still open")
    change = actions.add_parser("set", help="change sizing keys (ratio=0.75 lots=2 strategy=fixed_lots ...), "
                                            "validated as the config validates them")
    change.add_argument("name")
    change.add_argument("changes", nargs="+", metavar="KEY=VALUE")
    reset = actions.add_parser("reset", help="drop the sizing keys set with `set`: the config's sizing again")
    reset.add_argument("name")
    add = actions.add_parser("add", help="start following NAME as the config file now has it")
    add.add_argument("name")
    remove = actions.add_parser("remove", help="stop following NAME (removed from the config file first): its open "
                                               "copies are cancelled, its positions left")
    remove.add_argument("name")
    actions.add_parser("list", help="every follower: running, paused, its sizing now")
    history = actions.add_parser("history", help="who changed which follower, when")
    history.add_argument("name", nargs="?")
    history.add_argument("--limit", type=int, default=50)
    for parser in (pause, resume, change, reset, add, remove):
        parser.add_argument("--by", default="", help="who asks, for the record (default: your user name)")
    follower.set_defaults(handler=cmd_follower)

    reload = sub.add_parser("reload", help="add and remove followers as the config file says now (as SIGHUP does)")
    reload.add_argument("--by", default="")
    reload.set_defaults(handler=cmd_reload)

    square = sub.add_parser("square-off", help="cancel a follower's open copies, close its open positions at "
                                               "market and leave it paused")
    square.add_argument("names", nargs="*", metavar="NAME")
    square.add_argument("--all", action="store_true", help="every follower")
    square.add_argument("--segment", action="append", default=[], metavar="SEGMENT",
                        help="only this exchange segment (NSE_EQ, NSE_FNO, ...); may be given more than once")
    square.add_argument("--by", default="")
    square.set_defaults(handler=cmd_square_off)


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _fail(message: str, status: int = 1) -> int:
    print(message, file=sys.stderr)
    return status


def ask_running_copier(store: Any, command: dict[str, Any], by: str) -> int:
    """Queue `command` for the running copier and print its answer; the exit status."""
    request = store.requests.submit(command, by)
    timeout = TIMEOUTS.get(command["action"], 30.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = store.requests.answer_of(request)
        if answer is not None:
            print(answer.text, file=sys.stdout if answer.ok else sys.stderr)
            return 0 if answer.ok else 1
        time.sleep(0.1)
    if store.requests.withdraw(request):
        return _fail(f"the running copier did not take the request within {timeout:.0f}s: nothing was done")
    return _fail(f"the copier took the request but did not answer within {timeout:.0f}s; it goes on with it "
                 "(see its log, and run.py follower history)")


def _values(changes: list[str]) -> dict[str, Any]:
    """KEY=VALUE words, each value read as YAML reads it in the config (0.75 a number, true a bool)."""
    out: dict[str, Any] = {}
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{change!r}: give each change as KEY=VALUE, e.g. ratio=0.75")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def cmd_follower(args: argparse.Namespace) -> int:
    from app.commands import copier_running, open_config
    from copier.accounts import recorded_accounts
    from trading.leader import is_leader

    config, store = open_config(args)
    running = copier_running(store)
    in_config = {f.name: f for f in config.followers}
    followers_now = {name for name in recorded_accounts(store) if not is_leader(name)} if running else set()
    known = set(in_config) | followers_now
    if args.action == "list":
        return _list(store, config, followers_now)
    if args.action == "history":
        for entry in store.followers.audit(args.name, args.limit):
            print(f"{_when(entry.at)} {entry.follower:<10} {entry.action:<10} by {entry.by}: {entry.detail}")
        return 0
    name, by = args.name, _who(args)
    if args.action in ("add", "remove"):
        if not running:
            return _fail(f"follower {args.action}: no copier is running; it reads the config file's followers "
                         "when it starts")
        return ask_running_copier(store, {"action": args.action, "follower": name}, by)
    if name not in known:
        return _fail(f"follower {args.action}: no follower named {name!r} (followers: {', '.join(sorted(known))})", 2)
    command: dict[str, Any] = {"action": args.action, "follower": name}
    if args.action == "pause":
        command["reason"] = args.reason
    elif args.action == "resume":
        command["catch_up"] = args.catch_up
    elif args.action in ("set", "reset"):
        try:
            changes = _values(args.changes) if args.action == "set" else {}
            if name in in_config:  # checked here as the copier checks it, before anything is asked
                from copier.roster import keys_used, sizing_with

                keys_used(sizing_with(in_config[name].sizing, {**store.followers.state(name).sizing, **changes}
                                      if changes else {}), changes)
        except ConfigError as exc:
            return _fail(f"follower {args.action} {name}: {exc}", 2)
        command["changes"] = changes
    if running:
        return ask_running_copier(store, command, by)
    if config.mode == "paper":
        return _fail(f"follower {args.action}: no copier is running, and paper mode starts every run on empty storage, "
                     "so a change stored now would be lost: start the copier (python run.py), then give this command")
    return _store_only(store, command, by)


def _store_only(store: Any, command: dict[str, Any], by: str) -> int:
    """No copier runs: the change is stored, and its next start applies it."""
    name, action = command["follower"], command["action"]
    later = "(no copier is running: it applies when the copier starts)"
    if action == "pause":
        store.followers.pause(name, command["reason"], by)
        print(f"{name} paused {later}")
    elif action == "resume":
        if command.get("catch_up"):
            return _fail("follower resume --catch-up: no copier is running to copy the orders (start it, then resume)")
        if not store.followers.state(name).paused:
            print(f"{name} was not paused")
            return 0
        store.followers.resume(name, by)
        print(f"{name} resumed {later}")
    else:
        changes = command["changes"]
        merged = {**store.followers.state(name).sizing, **changes} if changes else {}
        store.followers.set_sizing(name, merged, by, ", ".join(f"{k}={v}" for k, v in changes.items())
                                   or "the config's sizing")
        print(f"{name}: sizing {'set' if merged else 'back to the config'} {later}")
    return 0


def _list(store: Any, config: Any, running: set[str]) -> int:
    from actors.follower_control import describe_rule, pause_detail
    from copier.roster import sizing_with

    states = store.followers.states()
    configured = {f.name: f for f in config.followers}
    for name in sorted(set(configured) | set(states) | running):
        state = states.get(name)
        where = "running" if name in running else ("in the config" if name in configured else "not in the config")
        paused = pause_detail(state) if state is not None and state.paused else "copying"
        sizing = ""
        if name in configured:
            try:
                rule = sizing_with(configured[name].sizing, state.sizing if state is not None else {})
                sizing = f"sizing {describe_rule(rule)}"
            except ConfigError as exc:
                sizing = f"sizing: the stored change no longer fits the config ({exc})"
            if state is not None and state.sizing:
                sizing += f" (set by {state.sizing_by}: " + ", ".join(f"{k}={v}" for k, v in state.sizing.items()) + ")"
        print(f"{name:<12} {where:<18} {paused:<40} {sizing}".rstrip())
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from app.commands import copier_running, open_config

    _config, store = open_config(args)
    if not copier_running(store):
        return _fail("reload: no copier is running; it reads the config file when it starts")
    return ask_running_copier(store, {"action": "reload"}, _who(args))


def cmd_square_off(args: argparse.Namespace) -> int:
    from app.commands import copier_running, open_config
    from copier.accounts import recorded_accounts
    from trading.calendar import SEGMENT_HOURS

    config, store = open_config(args)
    if bool(args.names) == bool(args.all):
        return _fail("square-off: name the followers, or give --all", 2)
    segments = [s.upper() for s in args.segment]
    unknown = [s for s in segments if s not in SEGMENT_HOURS]
    if unknown:
        return _fail(f"square-off: unknown segment {unknown[0]!r} (segments: {', '.join(SEGMENT_HOURS)})", 2)
    if not copier_running(store):
        return _fail("square-off: no copier is running. It cancels copies through the copier's order actors and "
                     "places through its rate limiters: start the copier (pause the follower first, run.py follower "
                     "pause NAME, if nothing new should be copied to it meanwhile), then square off")
    known = {f.name for f in config.followers} | (set(recorded_accounts(store)) - {"leader"})
    missing = [n for n in args.names if n not in known]
    if missing:
        return _fail(f"square-off: no follower named {missing[0]!r} (followers: {', '.join(sorted(known))})", 2)
    return ask_running_copier(store, {"action": "square-off", "followers": args.names, "all": args.all,
                                      "segments": segments}, _who(args))
