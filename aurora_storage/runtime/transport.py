"""How messages reach nodes: the direct transport and the simulated one.

Both implement :class:`Transport`. Endpoints (the writer, each storage node)
register a handler that takes (message, sender) and returns (destination,
message) pairs; the transport delivers them. The writer never waits on its
own: it asks the transport to ``run_until`` a condition holds, so in
simulation a quorum really is the first four acks to arrive.

- :class:`DirectTransport`: in-process calls in FIFO order, no latency, the
  embedded default. Down nodes and cut links drop messages.
- :class:`SimulatedTransport`: seeded latency, loss, duplication, reordering
  (from random latency), partitions, node and AZ outages, periodic ticks, all
  in virtual time. The same seed and the same calls give the same delivery
  order; ``trace_hash`` fingerprints it so a failing seed replays exactly.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import xxhash

from ..clock import SimulatedClock
from ..errors import MessageStormError
from ..protocol import messages as m
from .sync import GroupSyncJob, SyncJob

Handler = Callable[[m.Message, str], list[tuple[str, m.Message]]]
Syncer = Callable[[], "SyncJob | GroupSyncJob | None"]

DELIVERIES_PER_RUN_MAX = 10_000_000  # a run that delivers more is a livelock (the default)


class Transport:
    """The seam between protocol state machines and the world."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.syncers: dict[str, Syncer] = {}
        self.down: set[str] = set()
        self.cut_links: set[tuple[str, str]] = set()
        self.delivered = 0
        self.dropped = 0
        # Deliveries one run may make before it raises MessageStormError: every
        # exchange is bounded by its progress, so only a livelock reaches this.
        self.deliveries_per_run_max = DELIVERIES_PER_RUN_MAX
        self.sync_failures: list[tuple[str, OSError]] = []
        # Held by every caller that changes protocol state (the writer, sync callbacks).
        self.lock = threading.RLock()
        # Called (the lock held) just before a thread leads a flush: the writer
        # sends the frames it held back while the previous flush ran.
        self.before_lead: Callable[[], None] | None = None

    def register(self, name: str, handler: Handler, syncer: Syncer | None = None) -> None:
        """Adds an endpoint; ``syncer`` returns the fsync work it has due (storage nodes)."""
        self.handlers[name] = handler
        if syncer is not None:
            self.syncers[name] = syncer
        else:
            self.syncers.pop(name, None)

    def register_syncer(self, name: str, syncer: Syncer) -> None:
        """A syncer with no endpoint of its own (several nodes' shared file system)."""
        self.syncers[name] = syncer

    def _sync_inline(self, name: str) -> None:
        """Runs an endpoint's due fsyncs now and sends the acks they release."""
        job = self.syncers[name]()
        if job is None:
            return
        job.start()
        job.index()
        job.wait()
        self._settle_job(job)

    def _settle_job(self, job: SyncJob | GroupSyncJob) -> None:
        """After a job's wait: stops the nodes whose sync failed, sends the others' acks."""
        for failed, error in job.failures():
            self.sync_failures.append((failed, error))
            self.set_down(failed, True)
        for source, destination, message in job.deliveries():
            self.send(source, destination, message)

    def now(self) -> float:
        return 0.0

    def link_open(self, source: str, destination: str) -> bool:
        return (
            source not in self.down
            and destination not in self.down
            and (source, destination) not in self.cut_links
        )

    def set_down(self, name: str, down: bool) -> None:
        if down:
            self.down.add(name)
        else:
            self.down.discard(name)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cuts every link between endpoints of different groups (both ways)."""
        sets = [set(group) for group in groups]
        for i, left in enumerate(sets):
            for right in sets[i + 1 :]:
                for a in left:
                    for b in right:
                        self.cut_links.add((a, b))
                        self.cut_links.add((b, a))

    def heal(self) -> None:
        self.cut_links.clear()

    def send(self, source: str, destination: str, message: m.Message) -> None:
        raise NotImplementedError

    def wait_for_syncs(self) -> None:
        """Blocks until no fsync is in flight."""

    def flush_in_flight(self) -> bool:
        """True while a led flush runs (the lock released): frames sent now would
        wait for the next flush whatever happens, so the writer may hold them back
        and send them, batched, through :attr:`before_lead`."""
        return False

    def close(self) -> None:
        """Releases threads; the transport is unusable afterwards."""

    def run_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Delivers messages until ``condition()`` holds or nothing more can happen by timeout."""
        raise NotImplementedError

    def _deliver(self, source: str, destination: str, message: m.Message) -> None:
        if (self.down or self.cut_links) and not self.link_open(source, destination):
            self.dropped += 1
            return
        handler = self.handlers.get(destination)
        if handler is None:
            self.dropped += 1
            return
        self.delivered += 1
        for target, reply in handler(message, source):
            self.send(destination, target, reply)


class DirectTransport(Transport):
    """In-process delivery in FIFO order, the embedded default.

    Storage nodes' fsyncs run on a pool of ``sync_threads`` threads, one job per
    node at a time, so the six nodes sync in parallel and each job covers every
    frame that arrived meanwhile (group commit). ``run_until`` returns as soon
    as its condition holds, e.g. once the first four acks are in; the other
    syncs finish in the background. With ``sync_threads=0`` syncs run inline.

    A syncer registered with ``register_syncer`` (one flush shared by several
    nodes) is run by a thread waiting in ``run_until`` instead: the waiter
    becomes the flush's leader; it starts the flush (on the flusher's own
    thread), does the job's indexing meanwhile, releases the lock while it
    waits and delivers the acks itself, which saves two thread hand-offs per
    commit.
    Threads that commit meanwhile find the flush in flight, wait, and one of
    them leads the next flush, which covers all their frames (group commit).
    """

    def __init__(self, sync_threads: int = 6) -> None:
        super().__init__()
        self._queue: deque[tuple[str, str, m.Message]] = deque()
        self._draining = False
        self._pool = ThreadPoolExecutor(sync_threads, "aurora-sync") if sync_threads else None
        self._in_flight: set[str] = set()
        self._finished: deque[SyncJob | GroupSyncJob] = deque()
        self._changed = threading.Condition(self.lock)
        self._led: set[str] = set()  # syncers run by a waiting thread (register_syncer)

    def register_syncer(self, name: str, syncer: Syncer) -> None:
        super().register_syncer(name, syncer)
        if self._pool is not None:
            self._led.add(name)

    def send(self, source: str, destination: str, message: m.Message) -> None:
        self._queue.append((source, destination, message))

    def _drain(self) -> None:
        if self._draining:  # a handler sent while we deliver: the loop below takes it
            return
        self._draining = True
        try:
            delivered = 0
            while True:
                while self._queue:
                    source, destination, message = self._queue.popleft()
                    self._deliver(source, destination, message)
                    delivered += 1
                    if delivered >= self.deliveries_per_run_max:
                        self._queue.clear()  # nothing of the storm is left to deliver later
                        raise MessageStormError("the direct transport", delivered)
                    if self._pool is not None and destination in self.syncers:
                        # Start this node's fsync now, while the others still work.
                        self._start_sync(destination)
                self._collect_syncs()
                self._start_syncs()
                if not self._queue:
                    return
        finally:
            self._draining = False

    def _start_syncs(self) -> None:
        for name in self.syncers:
            if self._pool is None:
                if name not in self.down:
                    self._sync_inline(name)
                continue
            self._start_sync(name)

    def _start_sync(self, name: str) -> None:
        """Hands a node's due fsync work to the pool, unless a job of its is in flight."""
        if name in self._in_flight or name in self.down or self._pool is None or name in self._led:
            return
        job = self.syncers[name]()
        if job is None:
            return
        job.start()
        self._in_flight.add(name)
        self._pool.submit(self._run_job, name, job)
        job.index()  # while the pool thread syncs

    def _run_job(self, name: str, job: SyncJob | GroupSyncJob) -> None:
        job.wait()
        with self._changed:
            self._finished.append(job)
            self._in_flight.discard(name)
            self._changed.notify_all()

    def _collect_syncs(self) -> None:
        while self._finished:
            self._settle_job(self._finished.popleft())

    def flush_in_flight(self) -> bool:
        return any(name in self._in_flight for name in self._led)

    def _lead_sync(self) -> bool:
        """Runs one due led sync job on this thread, the lock released while it waits.

        Returns True if a job ran (its acks are then ready to deliver). The
        caller holds the lock, maybe recursively (public volume methods nest),
        so it is released whole and restored whole, as Condition.wait does.
        """
        for name in self._led:
            if name in self._in_flight or name in self.down:
                continue
            if self.before_lead is not None:
                self.before_lead()  # frames held back during the last flush join this one
                self._drain()
            job = self.syncers[name]()
            if job is None:
                continue
            job.start()
            self._in_flight.add(name)
            try:
                job.index()  # while the flusher's thread flushes
            except BaseException:
                job.wait()  # a flush is never left in flight, nor its outcome unsettled
                self._in_flight.discard(name)
                self._finished.append(job)
                raise
            state = self.lock._release_save()  # type: ignore[attr-defined]
            try:
                job.wait()
            finally:
                self.lock._acquire_restore(state)  # type: ignore[attr-defined]
                self._in_flight.discard(name)
                self._changed.notify_all()
            self._finished.append(job)
            return True
        return False

    def run_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            deadline = time.monotonic() + timeout
            while True:
                self._drain()
                if condition():
                    return True
                if self._lead_sync():
                    continue
                remaining = deadline - time.monotonic()
                if (not self._in_flight and not self._finished) or remaining <= 0:
                    return condition()
                self._changed.wait(remaining)

    def wait_for_syncs(self) -> None:
        """Blocks until no sync job is in flight (used by close)."""
        with self._changed:
            while True:
                self._drain()
                if self._lead_sync():
                    continue
                if not self._in_flight and not self._finished:
                    return
                self._changed.wait(1.0)

    def close(self) -> None:
        self.wait_for_syncs()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class NetworkFaults:
    """Seeded fault rates of the simulated network."""

    latency_min: float = 0.0005
    latency_max: float = 0.005
    loss: float = 0.0
    duplication: float = 0.0


class SimulatedTransport(Transport):
    """Virtual-time delivery with seeded latency, loss, duplication and reordering."""

    def __init__(
        self,
        seed: int,
        clock: SimulatedClock | None = None,
        faults: NetworkFaults | None = None,
        tick_interval: float = 0.05,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.random = random.Random(seed)
        self.clock = clock or SimulatedClock()
        self.faults = faults or NetworkFaults()
        self.tick_interval = tick_interval
        self.tick_targets: list[str] = []
        self._events: list[tuple[float, int, str, str, m.Message]] = []
        self._sequence = 0
        self._next_tick = self.clock.now() + tick_interval
        self._trace = xxhash.xxh3_64()
        self.lost = 0
        self.duplicated = 0
        self.observers: list[Callable[[], None]] = []

    def now(self) -> float:
        return self.clock.now()

    def set_faults(self, faults: NetworkFaults) -> None:
        self.faults = faults

    def send(self, source: str, destination: str, message: m.Message) -> None:
        faults = self.faults
        copies = 1
        if faults.loss and self.random.random() < faults.loss:
            self.lost += 1
            copies = 0
        elif faults.duplication and self.random.random() < faults.duplication:
            self.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = self.random.uniform(faults.latency_min, faults.latency_max)
            self._sequence += 1
            event = (self.clock.now() + delay, self._sequence, source, destination, message)
            heapq.heappush(self._events, event)

    def run_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = self.clock.now() + timeout
        # A test may have moved the clock on (SimulatedClock.advance): what fell due
        # meanwhile happens now, and ticks resume from now.
        self._next_tick = max(self._next_tick, self.clock.now())
        delivered = 0
        while not condition():
            next_event = self._events[0][0] if self._events else float("inf")
            if min(next_event, self._next_tick) > deadline:
                self.clock.set(max(deadline, self.clock.now()))
                return condition()
            if self._next_tick <= next_event:
                self.clock.set(self._next_tick)
                self._next_tick += self.tick_interval
                for target in self.tick_targets:
                    if target not in self.down:
                        self._trace.update(f"tick {target} {self.clock.now():.9f}\n".encode())
                        self._deliver(target, target, m.Tick())
            else:
                when, _, source, destination, message = heapq.heappop(self._events)
                when = max(when, self.clock.now())
                self.clock.set(when)
                self._trace.update(
                    f"{when:.9f} {source} {destination} {type(message).__name__}\n".encode()
                )
                self._deliver(source, destination, message)
                if destination in self.syncers and destination not in self.down:
                    self._sync_inline(destination)
                for name in self.syncers:
                    if name not in self.handlers:  # a group syncer: nodes sharing a disk
                        self._sync_inline(name)
            for observe in self.observers:
                observe()
            delivered += 1
            if delivered >= self.deliveries_per_run_max:
                raise MessageStormError("the simulated transport", delivered)
        return True

    def settle(self, seconds: float) -> None:
        """Lets virtual time pass, delivering everything due."""
        self.run_until(lambda: False, seconds)

    @property
    def trace_hash(self) -> str:
        return self._trace.hexdigest()
