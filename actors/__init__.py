"""The copier's actors. Read `actors/messages.py` first: it is the whole protocol between them.

feed.py         FeedActor: one per account socket (leader and each follower): login, parse, store, route
router.py       OrderRouter: spawns and supervises one OrderActor per leader order
order.py        OrderActor: serialises one leader order's events and converges its follower copies
sizing.py       SizingActor: follower quantities and the capital lock
rate_limiter.py RateLimiter: one per account; keeps broker calls inside its limits and sends them
                (RateLimiterActor: its clock for calls that must wait, and its retries)
"""
