"""Commands, writes and actions (since v0.3): the city acts through the box.

A write is a pipeline of refusals: parse (``message``) → authenticate (``message``)
→ authorize (``authorize``: writable, allowed, range, rate) → encode (the kind's codec, exact
or refused) → write once → read back → record. Every stage but the write and the read-back is
pure and returns a reason word; each write ends in one :class:`~.outcome.Outcome`.
"""
