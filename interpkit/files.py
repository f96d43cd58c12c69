"""Files appear whole or not at all: every write goes to a temporary file beside the target,
which replaces the target only when the write succeeded."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK = threading.Lock()


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (or ``mkdir``) would give under the process's umask: read from
    /proc where it can be, else by setting the umask and putting it straight back, under a lock
    (two threads doing that at once could leave it changed)."""
    try:
        status = Path("/proc/self/status").read_text()
        mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError, IndexError):
        with _UMASK:
            mask = os.umask(0o022)
            os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers can infer the format);
    on success it replaces ``path``, on any error it is removed and ``path`` is left as it was.
    The file keeps the mode of the file it replaces, or gets the one a plain ``open()`` would give
    a new file (0644 under the usual umask), not the private 0600 of a temporary file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, stat.S_IMODE(target.stat().st_mode) if target.is_file() else default_mode())
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
