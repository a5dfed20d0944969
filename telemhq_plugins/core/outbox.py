"""The hand-off between the threads that make pings and the one thread that sends them.

A bounded FIFO with one consumer. :meth:`Outbox.put` is what a job's thread pays per ping:
a length check and a ``deque.append`` (atomic in CPython), plus one ``Event.set`` only when
the consumer sleeps and waits for exactly this (an item, or a full batch). ``queue.Queue``
takes a lock and notifies a condition on every put and every get, and its ``task_done``
bookkeeping takes a third lock: several lock operations per ping across the two threads,
and every notify can wake the consumer, which then takes the GIL from the job. What
:meth:`wait_done` needs (has everything put been handled?) is kept by the consumer alone
instead.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Generic, TypeVar

__all__ = ["Outbox"]

T = TypeVar("T")


class Outbox(Generic[T]):
    """Producers :meth:`put`; one consumer :meth:`wait` s, :meth:`take` s, then marks what it
    took as handled with :meth:`done`. Not for several consumers."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._wake = threading.Event()
        #: how many waiting items wake the consumer: set before it sleeps, "never" otherwise
        #: (so a put need not ask the Event whether it sleeps: a Python-level call per ping).
        self._wake_at = sys.maxsize
        #: set by :meth:`hurry`: the consumer should not wait for more (someone flushes).
        self.urgent = False
        #: items the consumer took and has not yet reported done (written by it alone).
        self._in_hand = 0
        self._done = threading.Condition(threading.Lock())

    def put(self, item: T) -> bool:
        """Add ``item``; False (and nothing added) when the outbox is full. Never blocks."""
        items = self._items
        if len(items) >= self.maxsize:  # racy by a few items under contention: a soft bound
            return False
        items.append(item)
        if len(items) >= self._wake_at:
            self._wake.set()  # the consumer sleeps (or is about to) until this many wait
        return True

    def __len__(self) -> int:
        """Items waiting to be taken (not counting those the consumer holds)."""
        return len(self._items)

    def pending(self) -> int:
        """Items put and not yet handled: waiting, or in the consumer's hands."""
        return len(self._items) + self._in_hand

    # -- the consumer's side -------------------------------------------------------------------

    def hurry(self, urgent: bool = True) -> None:
        """Tell the consumer to stop waiting for more (and wake it), or that it may again."""
        self.urgent = urgent
        if urgent:
            self._wake.set()

    def wait(self, timeout: float | None = None, at_least: int = 1) -> bool:
        """Sleep until ``at_least`` items are waiting, at most ``timeout`` seconds; True if
        any item is waiting. While :attr:`urgent`, a wait for a batch (``at_least`` > 1)
        returns at once; a wait for a first item does not (there is nothing to hurry)."""
        items = self._items
        hurried = at_least > 1 and self.urgent
        if len(items) >= at_least or hurried:
            return bool(items)
        self._wake_at = at_least
        self._wake.clear()
        # A put (or hurry) between the first check and the clear may have lost its set().
        if len(items) < at_least and not (at_least > 1 and self.urgent):
            self._wake.wait(timeout)
        self._wake_at = sys.maxsize
        return bool(items)

    def take(self, into: list[T], limit: int) -> int:
        """Move waiting items into ``into`` until it holds ``limit``; how many were moved.
        Each counts as in hand before it leaves the deque, so :meth:`pending` never misses
        it (it may count one twice for an instant, which only makes a flush wait longer)."""
        moved = 0
        items = self._items
        while len(into) < limit:
            self._in_hand += 1
            try:
                into.append(items.popleft())
            except IndexError:
                self._in_hand -= 1
                break
            moved += 1
        return moved

    def done(self, count: int) -> None:
        """The consumer handled ``count`` of the items it took."""
        with self._done:
            self._in_hand -= count
            self._done.notify_all()

    def wait_done(self, timeout: float) -> bool:
        """Wait until everything put so far was handled, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self.pending():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(remaining)
        return True

    def pop_all(self) -> list[T]:
        """Remove and return what is waiting (at exit, to keep it elsewhere); callable from
        any thread while the consumer runs (each item goes to exactly one of them)."""
        popped: list[T] = []
        while True:
            try:
                popped.append(self._items.popleft())
            except IndexError:
                return popped
