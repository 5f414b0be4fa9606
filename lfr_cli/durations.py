"""Parsing of human durations such as `30m`, `90s`, `1h30m`."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+)\s*([hms])")
_UNIT = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> int:
    """Seconds in `text`; a bare number is seconds. Raises ValueError with the accepted forms."""
    t = text.strip().lower()
    if t.isdigit():
        seconds = int(t)
    else:
        parts = _PART.findall(t)
        if not parts or _PART.sub("", t).strip():
            raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h or 1h30m")
        seconds = sum(int(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds
