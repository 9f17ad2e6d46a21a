"""The buffered background worker under the decision log and the shadow evaluator."""

from __future__ import annotations

import threading

from rolegate.buffered import BufferedWorker


class Collector(BufferedWorker):
    thread_name = "test-collector"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.drained: list[int] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def drain(self):
        self.gate.wait(10)
        self.threads.add(threading.current_thread().name)
        while self.buffer:
            self.drained.append(self.buffer.popleft())


def test_flush_returns_once_everything_offered_before_it_was_drained_on_the_thread():
    worker = Collector(capacity=100, interval=60)  # only flush wakes it
    assert all(worker.offer(number) for number in range(50))
    assert worker.flush(timeout=5)
    assert worker.drained == list(range(50))
    assert worker.threads == {"test-collector"}
    worker.close()


def test_a_full_buffer_refuses_instead_of_blocking_and_keeps_what_it_holds():
    worker = Collector(capacity=3, interval=60)
    worker.gate.clear()  # the thread, once woken, is stuck in a slow drain
    assert [worker.offer(n) for n in (0, 1, 2, 3)] == [True, True, True, False]
    assert worker.flush(timeout=0.2) is False  # the drain has not finished
    assert worker.offer(4) is False  # still full: nothing was taken yet
    worker.gate.set()
    assert worker.flush(timeout=5)
    assert worker.drained == [0, 1, 2]
    assert worker.offer(5) and worker.flush(timeout=5) and worker.drained == [0, 1, 2, 5]
    worker.close()


def test_close_drains_what_is_left_refuses_later_offers_and_is_idempotent():
    worker = Collector(capacity=10, interval=60)
    worker.offer("a")
    worker.offer("b")
    assert worker.close(timeout=5) is True
    assert worker.drained == ["a", "b"]
    assert worker.offer("late") is False and worker.drained == ["a", "b"]
    assert worker.close() is False
    assert worker.flush(timeout=1)  # nothing left: returns at once


def test_flush_without_a_thread_answers_whether_anything_waits():
    worker = Collector(capacity=10, interval=60)
    assert worker.flush(timeout=0.1) is True  # nothing offered, no thread started
    assert worker._thread is None
