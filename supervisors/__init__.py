"""Supervision in the manner of Erlang/OTP, on Pykka actors.

- `Address`: a stable name for an actor whose `ActorRef` changes on every restart.
- `Supervised`: the base of every supervised actor; tells its supervisor when it crashes or stops.
- `Supervisor`: starts children from `ChildSpec`s in order, restarts them one-for-one by their
  `Restart` type, starts and terminates children while it runs, and when its children together
  need more than `max_restarts` restarts within `period` seconds stops them all and escalates.
- `ActorPool` (pool.py): actors on a shared, fixed pool of threads, a mailbox each.
- `Timers`: the one timer thread for every delayed and periodic message.
"""
from supervisors.address import Address
from supervisors.supervisor import Child, ChildSpec, Escalated, Restart, Supervised, Supervisor
from supervisors.timers import Timers

__all__ = ["Address", "Child", "ChildSpec", "Escalated", "Restart", "Supervised", "Supervisor", "Timers"]
