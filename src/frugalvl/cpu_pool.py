"""Independent pieces of CPU work run side by side on (mostly single-threaded) workers, results in order.

On a CPU, PyTorch parallelises each operation over its intra-op threads: every operation is one
OpenMP region that ends in a barrier. A ViT window is hundreds of operations, most of them small
(layer norms, activations, 197-row matrix products), so each barrier costs a little on an idle
machine and a lot on a busy one, where a descheduled thread holds up the others (measured on the
2-core development machine: a 448² SegEarth-OV image 31-41 s with two intra-op threads, 7-12 s with
two windows side by side on one thread each; docs/benchmarks.md#segearth-ov-on-the-cpu). Windows are
independent, so running whole windows on single-threaded workers keeps every core busy without
any barrier until the end.

The arithmetic of each piece is what a one-thread run does; a matrix product split over threads
may sum in another order, so results can differ from an intra-op run in the last bits (float
reassociation), never more.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_PREFIX = "frugalvl-cpu"
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def cpu_workers(device: torch.device | str, tasks: int) -> int:
    """How many single-threaded workers to use for ``tasks`` independent pieces: one per intra-op
    thread (``torch.get_num_threads()``) on the CPU, at most one per task; 1 elsewhere."""
    if torch.device(device).type != "cpu" or tasks < 2:
        return 1
    return max(1, min(torch.get_num_threads(), tasks))


def _pool(workers: int) -> ThreadPoolExecutor:
    with _LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=_PREFIX)
        return _POOLS[workers]


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for every item, yielded in the items' order.

    With ``workers > 1`` the calls run on that many threads, each with the caller's grad and inference
    modes and ``threads // workers`` intra-op threads (one on a machine with no more cores than workers).
    When ``items`` has a length, the last round's items, fewer than the workers, share all the threads
    instead of leaving cores idle (9 windows on 2 workers: the 9th runs on both cores); at most ``2 × workers`` results wait to be consumed, so memory
    stays bounded however many items there are. With 1 worker, or called from a worker, plain calls in
    this thread.
    """
    if workers <= 1 or threading.current_thread().name.startswith(_PREFIX):  # no nesting: no deadlock
        for item in items:
            yield fn(item)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()  # both are thread-local
    threads = torch.get_num_threads()
    inner = max(1, threads // workers)
    total = len(items) if isinstance(items, Sized) else None
    last_round = None if total is None or total % workers == 0 else total - total % workers

    def single_threaded(item: T, intra: int) -> R:
        torch.set_num_threads(intra)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(item)

    pool = _pool(workers)
    pending: deque[Future[R]] = deque()
    try:
        for i, item in enumerate(items):
            intra = inner
            if last_round is not None and total is not None and i >= last_round:
                intra = max(inner, threads // (total - last_round))
            pending.append(pool.submit(single_threaded, item, intra))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # the consumer stopped early or a call failed: drop what has not started
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # wait, so no worker still runs when the caller goes on
        # set_num_threads in a worker also changes the count that threads read when they first use
        # torch: restore the caller's
        torch.set_num_threads(threads)
