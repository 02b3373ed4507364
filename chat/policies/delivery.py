"""What the hub does with a committed conversation event for one connection.

Every connection remembers the last ``seq`` it was given per conversation
(its position).  The decision below keeps the hub's promise: each member
sees each conversation's events exactly once and in order, and a person who
is not a member at commit time sees nothing (authorisation at every event).
It is a pure function on plain values, so it is tested without sockets
(tests/test_delivery_policy.py); :meth:`chat.hub.Hub` applies it.

Decisions (plain ints: one comparison per recipient on the fan-out path):

- ``SKIP``: not a member at commit time (removed, or never one); nothing.
- ``NOTE``: the connection is not live on this conversation yet (setting up,
  or a fill from the database is running): remember the highest seq seen in
  ``pending`` so the fill goes at least that far.
- ``DROP``: a seq at or below the position is a duplicate (two workers'
  publishes, a replay that overtook live delivery).
- ``DELIVER``: the next seq: send it and advance the position.
- ``FILL``: a jump (publishes crossing, a broker outage): note the seq and
  fetch what is missing from the database, in order, before anything newer.
"""

from __future__ import annotations

SKIP = 0
NOTE = 1
DROP = 2
DELIVER = 3
FILL = 4


def delivery_decision(is_member: bool, position: int | None, filling: bool, seq: int) -> int:
    """The decision for an event ``seq`` given the connection's ``position``
    (None: not live yet) and whether a fill is running (see the module)."""
    if not is_member:
        return SKIP
    if position is None or filling:
        return NOTE
    if seq <= position:
        return DROP
    if seq == position + 1:
        return DELIVER
    return FILL
