"""MkDocs hook: TeX between $...$ (inline) and $$...$$ (display) becomes MathML when the site
is built, so formulas render in any current browser with no script and no network access.
Code blocks and code spans are left alone."""

from __future__ import annotations

import re

from latex2mathml.converter import convert

CODE = re.compile(r"(^```.*?^```[ \t]*$|`[^`\n]+`)", re.MULTILINE | re.DOTALL)
DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
INLINE = re.compile(r"(?<![\\$])\$(?![\s$])([^$\n]+?)(?<!\s)\$(?!\$)")


def to_mathml(text: str) -> str:
    """Every TeX formula of a Markdown text outside code, as MathML."""
    display = DISPLAY.sub(lambda m: "\n\n" + convert(" ".join(m.group(1).split()), display="block") + "\n\n", text)
    return INLINE.sub(lambda m: convert(m.group(1)), display)


def on_page_markdown(markdown: str, **_: object) -> str:
    parts = CODE.split(markdown)  # odd positions are code, kept verbatim
    return "".join(part if i % 2 else to_mathml(part) for i, part in enumerate(parts))
