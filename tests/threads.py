"""Run one piece of work in several threads at once, collecting what they raise."""

from __future__ import annotations

import threading
from typing import Callable


def in_threads(work: Callable[[int], None], count: int = 4) -> list[Exception]:
    """``work(i)`` in ``count`` threads started together; the exceptions they raised (a thread's
    exception would otherwise vanish)."""
    errors: list[Exception] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
