"""Paper exchange: a loopback DhanHQ v2 (REST + order-update socket) for tests and demos."""
from .exchange import AccountSpec, PaperExchange
from .faults import Faults
from .instruments import Instrument, load_instruments
from .leader_bot import LeaderBot

__all__ = ["PaperExchange", "AccountSpec", "Faults", "LeaderBot", "load_instruments", "Instrument"]
