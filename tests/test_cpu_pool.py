"""frugalvl.cpu_pool: results in order, bounded look-ahead, one intra-op thread per worker, errors raised."""

import threading
import time

import pytest
import torch

from frugalvl.cpu_pool import cpu_workers, map_in_order


def test_workers_follow_threads_and_tasks():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cpu_workers("cpu", 9) == 2
        assert cpu_workers("cpu", 1) == 1  # one task: nothing to share
        assert cpu_workers("meta", 9) == 1  # not the CPU
        torch.set_num_threads(1)
        assert cpu_workers("cpu", 9) == 1
    finally:
        torch.set_num_threads(threads)


def test_results_come_in_order_on_single_threaded_workers():
    seen = []

    def task(i):
        time.sleep(0.01 * (i % 3 == 0))  # the first of every three finishes last
        seen.append((threading.current_thread().name, torch.get_num_threads(), torch.is_grad_enabled()))
        return i * i

    threads = torch.get_num_threads()
    with torch.no_grad():
        out = list(map_in_order(task, range(10), 2))
    assert out == [i * i for i in range(10)]
    assert all(name.startswith("frugalvl-cpu") and not grad for name, _, grad in seen)
    assert sorted(n for _, n, _ in seen) == [max(1, threads // 2)] * 10  # 10 items: two full rounds of 5
    assert torch.get_num_threads() == threads  # the caller's count is restored


def test_look_ahead_is_bounded():
    started = []

    def task(i):
        started.append(i)
        return i

    gen = map_in_order(task, range(100), 2)
    assert next(gen) == 0
    time.sleep(0.05)
    assert len(started) <= 5  # 2 × workers submitted before the first result, plus the one replacing it
    gen.close()


def test_an_error_in_a_worker_reaches_the_caller():
    def task(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    with pytest.raises(ValueError, match="bad item 3"):
        list(map_in_order(task, range(8), 2))


def test_one_worker_runs_in_the_calling_thread():
    names = list(map_in_order(lambda i: threading.current_thread().name, range(3), 1))
    assert names == [threading.current_thread().name] * 3


def test_spare_threads_are_shared_among_the_workers():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert set(map_in_order(lambda i: torch.get_num_threads(), range(6), 2)) == {2}  # 4 threads, 2 workers
        assert set(map_in_order(lambda i: torch.get_num_threads(), range(6), 3)) == {1}  # 4 // 3
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(threads)


def test_the_last_partial_round_gets_the_idle_threads():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        counts = list(map_in_order(lambda i: torch.get_num_threads(), list(range(9)), 2))
        assert counts == [1] * 8 + [2]  # the 9th item runs alone: on both threads
        counts = list(map_in_order(lambda i: torch.get_num_threads(), iter(range(9)), 2))
        assert counts == [1] * 9  # no length, no tail rule
        torch.set_num_threads(6)
        counts = list(map_in_order(lambda i: torch.get_num_threads(), list(range(8)), 3))
        assert counts == [2] * 6 + [3, 3]  # 6 threads, 3 workers; the last 2 items share the 6 threads
    finally:
        torch.set_num_threads(threads)


def test_a_call_from_a_worker_runs_in_that_worker():
    def outer(i):
        inner = list(map_in_order(lambda j: threading.current_thread().name, range(3), 2))
        return threading.current_thread().name, inner

    for name, inner in map_in_order(outer, range(4), 2):
        assert inner == [name] * 3  # nested maps never wait on the pool they run in
