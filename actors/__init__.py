"""The copier's actors. Read `actors/messages/` first: it is the whole protocol between them.

feed.py         FeedActor: one per account socket (leader and each follower): login, parse, store, route
                (order actors, follower feeds and rate limiters run on shared pools: supervisors/pool.py)
router.py       OrderRouter: spawns and supervises one OrderActor per leader order
order.py        OrderActor: a shell around trading/copy.py for one leader order's copies (its helpers:
                order_plan, order_sighting, order_leader, order_answers, order_fills, order_strategy)
sizing.py       SizingActor: follower quantities and the capital lock
rate_limiter.py RateLimiter: one per account; keeps broker calls inside its limits and sends them
                (RateLimiterActor: its clock for calls that must wait, and its retries; windows.py
                counts the windows, broker_calls.py does each command at the broker)
broker_threads.py the threads every account's broker calls share: a fixed pool, a lane per account,
                and the one reader of placement answers (broker/answers.py)
"""
