"""The trading domain: order terms, the order state machine, sizing, instruments and market hours.

Nothing here does I/O or knows Dhan's wire format; the broker adapter in `broker/`
translates to and from these types.
"""
