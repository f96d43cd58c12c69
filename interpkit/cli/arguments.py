"""Parsers of list options on the command line: comma-separated names (--models, --layers, --methods,
--metrics) and index ranges (--channels)."""

from __future__ import annotations


def comma_names(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None (the option not given) stays None."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def index_ranges(text: str, option: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: non-negative indices and inclusive ranges, in the order given."""
    from ..errors import InputError

    indices: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()) or (dash and int(high) < int(low)):
            raise InputError(f"{option} takes indices and ranges such as 0-15,20; {part!r} is neither")
        indices += list(range(int(low), int(high if dash else low) + 1))
    if len(set(indices)) != len(indices):
        raise InputError(f"{option} names an index twice: {text}")
    return indices
