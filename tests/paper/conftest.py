"""Shared fixtures: a fresh exchange per test, a real dhanhq client and a logged-in order feed."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo root, for `import paper` under plain pytest
from dhanhq import dhanhq
from tests.paper.paper_support import LEADER, Feed, client, make_exchange

from paper import PaperExchange


@pytest.fixture
def ex() -> Iterator[PaperExchange]:
    exchange = make_exchange()
    yield exchange
    exchange.stop()


@pytest.fixture
def dhan(ex: PaperExchange) -> dhanhq:
    return client(ex)


@pytest.fixture
def feed(ex: PaperExchange) -> Iterator[Feed]:
    f = Feed(ex)
    assert ex.wait_for(lambda e: e.socket_count(LEADER) == 1, 5)
    yield f
    f.close()
