"""A bounded buffer drained by one background thread: the decision log's writer and the shadow
evaluator. The request thread only appends to a deque (atomic under the GIL: no lock, no
wake-up); the thread drains it every `interval` seconds, or at once on `flush` and `close`.

    class Printer(BufferedWorker):
        thread_name = "printer"

        def drain(self):
            while self.buffer:
                print(self.buffer.popleft())

    printer = Printer(capacity=1000, interval=0.2)
    printer.offer("hello")   # False (and nothing buffered) when full or closed
    printer.flush()          # True once everything offered so far was drained
    printer.close()          # drains what is left, stops the thread; idempotent
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from collections import deque
from typing import Any


class BufferedWorker:
    thread_name = "rolegate-buffered"

    def __init__(self, *, capacity: int, interval: float):
        self.capacity = capacity
        self.interval = interval
        self.buffer: deque[Any] = deque()
        self.lock = threading.Lock()  # guards the thread, the flush events and `closed`
        self.closed = False
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []
        self._thread: threading.Thread | None = None

    def offer(self, item: Any) -> bool:
        """Buffer `item` for the thread (started on first use); False when full or closed."""
        if self.closed or len(self.buffer) >= self.capacity:
            return False
        self.buffer.append(item)
        if self._thread is None:
            self._start()
        return True

    def drain(self) -> None:
        """In the thread: consume `self.buffer` (everything in it when called)."""
        raise NotImplementedError

    def before_drain(self) -> None:
        """In the thread, each time it wakes, before `drain`."""

    def _start(self) -> None:
        with self.lock:
            if self._thread is None and not self.closed:
                thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                thread.start()
                self._thread = thread
                atexit.register(_close_at_exit, weakref.ref(self))

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self.lock:
                flushes, self._flushes = self._flushes, []
                closing = self.closed
            self.before_drain()
            # Everything buffered before a flush was asked for is drained before it returns.
            self.drain()
            for done in flushes:
                done.set()
            if closing:
                return

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything buffered so far has been drained."""
        with self.lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return not self.buffer
            done = threading.Event()
            self._flushes.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Drain what is buffered and stop the thread. Idempotent: False when already closed."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
        return True


def _close_at_exit(reference: weakref.ref) -> None:
    worker = reference()
    if worker is not None:
        with contextlib.suppress(Exception):
            worker.close(timeout=2.0)
