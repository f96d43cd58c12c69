"""The one parser of comma-separated names on the command line (--models, --layers, --methods, --metrics)."""

from __future__ import annotations


def comma_names(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None (the option not given) stays None."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]
