"""Files appear whole or not at all: every write goes to a temporary file beside the target,
which replaces the target only when the write succeeded."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (or ``mkdir``) would give under the process's umask, read by
    setting the umask and putting it straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers can infer the format);
    on success it replaces ``path``, on any error it is removed and ``path`` is left as it was.
    The file gets the mode a plain ``open()`` would give it (0644 under the usual umask), not
    the private 0600 of a temporary file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, default_mode())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def save_figure(path: str | os.PathLike, figure, dpi: int = 90) -> None:
    """Save a matplotlib figure to ``path`` atomically."""
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=dpi)
