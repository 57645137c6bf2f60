"""A run of replies to one order actor (broker answers and the followers' own updates), handled
together. Each reply concerns one copy, so each is applied and its copy decided as if it came alone,
but what they all did is stored in one transaction and only then are their calls sent: not every
copy of the order decided once per reply, nor one transaction per reply."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from actors.messages import BrokerAnswer, OrderUpdateReceived, is_leader
from actors.order_plan import Plan
from supervisors.pool import CrashedOn
from storage import StorageDown

if TYPE_CHECKING:
    from actors.order import OrderActor


def takes_in_batch(actor: "OrderActor", message: Any) -> bool:
    """A reply about one follower copy (not the leader's order, not a flattening order)."""
    if isinstance(message, OrderUpdateReceived):
        return not is_leader(message.account)
    if isinstance(message, BrokerAnswer):
        command = message.command
        return not is_leader(command.account) and not actor.legs.is_flatten(command.account, command.correlation_id)
    return False


def handle_batch(actor: "OrderActor", messages: list[Any]) -> None:
    if actor.storage_down:
        return
    before, sliced, applied = actor.copies, actor.sliced, set(actor.applied)
    plan = actor.batch = Plan(actor, scoped=True)
    actor.copies = plan.states  # what each reply is applied to: the state the ones before it left
    done = 0
    try:
        for message in messages:
            if isinstance(message, OrderUpdateReceived):
                plan.news_arrived()
                actor.on_update(message)
            else:
                actor.answers.on_answer(message)
            plan.now = time.time()
            plan.converge()
            done += 1
    except StorageDown as exc:
        actor.batch = None
        actor.storage_refused(exc)
        return
    except Exception as exc:
        # Nothing of the batch is stored or sent yet: the replies before the failing one are
        # handled again one by one, as if never batched (their log lines and counters twice),
        # and the actor crashes on the failing one as it would have alone.
        actor.batch = None
        actor.copies, actor.sliced, actor.applied = before, sliced, applied
        for earlier in messages[:done]:
            try:
                actor.on_receive(earlier)
            except Exception as again:
                raise CrashedOn(earlier, again) from again
        raise CrashedOn(messages[done], exc) from exc
    finally:
        actor.batch = None
    try:
        plan.commit()
    except StorageDown as exc:
        actor.storage_refused(exc)
        return
    actor.maybe_idle()
