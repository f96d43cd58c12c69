"""Parsers of list options on the command line: comma-separated names (--models, --layers, --methods,
--metrics) and index ranges (--channels); and the refusal to replace files without --overwrite."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


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


def refuse_to_replace(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise before any work is done when one of ``paths`` exists and ``--overwrite`` was not given."""
    from ..errors import InputError

    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]}{more} exists; pass --overwrite to replace it, or write to another --out")
