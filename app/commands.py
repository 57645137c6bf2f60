"""Operator commands (subcommands of run.py). Each reads storage safely while the copier runs."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Operator commands are added here as they are built."""
