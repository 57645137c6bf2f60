#!/usr/bin/env python3
"""dhan-copytrader: copy every order of a leader Dhan account to follower accounts.

    python run.py                      # the shipped config: paper exchange + demo leader + live view
    python run.py --config my.yaml     # your accounts (mode: live)
    python run.py COMMAND --help       # operator commands: status, orders, replay, ...

Read app/cli.py next; README.md ("How it works") gives the whole reading order.
"""
from __future__ import annotations

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
