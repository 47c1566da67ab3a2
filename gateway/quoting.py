"""How a value read from a file or the network is shown in a message: its ``repr``, cut.

A message quotes what it refuses, and what it refuses may be megabytes (an alias bomb's
expansion, a 70,000-character topic): :func:`quote` shows about 80 characters of it, however
big it is, without walking it whole. Imports nothing of ours, so the lowest modules can use it.
"""

from __future__ import annotations

import reprlib

QUOTE_LIMIT = 80

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_LIMIT
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 6, 4, 6
_REPR.fillvalue = "…"


def quote(value: object) -> str:
    """``repr(value)`` cut to about 80 characters with ``…``, however big the value (an alias
    bomb's expansion is never walked whole)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4300 digits
        text = "<a number of more than 4300 digits>"
    return cut(text, QUOTE_LIMIT)


def cut(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as a string of at most ``limit`` characters, ending with ``…`` when cut."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
