"""How a pydantic validation error is told to a client: the field it names and why, in words.

The API's 422 and a batch line's error say the same thing of the same value:

- a value that misses a pattern reelay put into words (``reelay.models.worded``) is told what the
  field takes, not the regular expression;
- a URL its field's rule refuses is told why (``url_refusals``: the API's host rules);
- a value the picked request shape refuses that another shape of the same provider offers
  (sorahk's 25 s without ``pro``) names that shape (``reelay.variants.offered_elsewhere``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reelay.models import PATTERN_WORDS
from reelay.variants import offered_elsewhere

_LOCATIONS = ("body", "query", "path", "header")
# A request shape's tag (a union member, e.g. SorahkNormal) is not a field.
_SHAPE_TAG = re.compile(r"[A-Z][A-Za-z0-9]*")


def field_name(loc: Sequence[Any], *, whole: str = "body") -> str:
    """The dotted field an error's location names (``image_keys.0``), ``whole`` for the whole."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    if parts and _SHAPE_TAG.fullmatch(parts[0]):
        parts = parts[1:]
    return ".".join(parts) or whole


def message(
    error: Mapping[str, Any],
    *,
    body_type: Any = None,
    url_refusals: Mapping[str, Callable[[str], str | None]] | None = None,
) -> str:
    """What is wrong with the value ``error`` names, in words.

    ``body_type`` is the union of request shapes the body was read as (``video_body``), for the
    shape hint; ``url_refusals`` the refusal of each URL field by name (None when the host is fine
    and only the URL's form is wrong)."""
    names = [p for p in error.get("loc", ()) if isinstance(p, str)]
    kind = error.get("type")
    value = error.get("input")
    refusal = (url_refusals or {}).get(names[-1]) if names else None
    if refusal is not None and kind in ("string_pattern_mismatch", "value_error") and isinstance(value, str):
        return refusal(value) or "is not an http(s) URL this API takes (see /v1/openapi.json)"
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(str((error.get("ctx") or {}).get("pattern", "")))
        if words is not None:
            return words
    said = str(error.get("msg", ""))
    if kind == "literal_error" and body_type is not None and len(names) >= 2:
        elsewhere = offered_elsewhere(body_type, names[-2], names[-1], value)
        if elsewhere is not None:
            return f"{said}; {elsewhere}"
    return said
