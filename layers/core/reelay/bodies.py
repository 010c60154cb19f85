"""Checks on a request body's bytes that must run before any JSON parser sees them.

Python's ``json`` recurses once per nesting level: a body of ten thousand ``[`` would end in
``RecursionError`` (a 500) inside whichever parser meets it first. The depth is counted here on
the raw bytes, outside strings, without recursion, by the API and the callback route alike.
"""

from __future__ import annotations

import re

MAX_JSON_DEPTH = 32

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings, without parsing (no recursion).

    Malformed input gives some number; the parser that runs next refuses it properly.
    """
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest
