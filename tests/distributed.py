"""Run a function in several CPU processes joined by a gloo process group, and collect results."""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, work: Callable[..., Any], args: tuple, queue: Any) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        queue.put((rank, work(*args)))  # results must travel by value: numpy arrays, not tensors
    finally:
        dist.destroy_process_group()


def run_ranks(work: Callable[..., Any], args: tuple = (), world: int = 2, timeout: float = 300) -> list[Any]:
    """``work(*args)`` on each of ``world`` ranks; the results in rank order. ``work`` must be a
    module-level function (the processes are spawned) and return picklable values by value."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    workers = [context.Process(target=_rank_main, args=(r, world, port, work, args, queue)) for r in range(world)]
    for worker in workers:
        worker.start()
    results = dict(queue.get(timeout=timeout) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0, f"a rank exited with {worker.exitcode}"
    return [results[r] for r in range(world)]
