"""Supervision in the manner of Erlang/OTP, on Pykka actors.

- `Address`: a stable name for an actor whose `ActorRef` changes on every restart.
- `Supervised`: the base of every supervised actor; tells its supervisor when it crashes.
- `Supervisor`: starts children from `ChildSpec`s in order, restarts them one-for-one, and
  escalates when they crash more than `max_restarts` times within `period` seconds.
"""
from supervisors.address import Address
from supervisors.supervisor import ChildSpec, Escalated, Supervised, Supervisor

__all__ = ["Address", "ChildSpec", "Escalated", "Supervised", "Supervisor"]
