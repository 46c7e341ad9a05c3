"""Sync jobs: the fsyncs a storage node asks for, run by the transport outside the lock.

A node (protocol/node.py) holds its acks until the files under them are
durable; :meth:`StorageNode.begin_sync` says what is due (a SyncRequest: the
dirty files, the held acks, the segments whose frames wait to be indexed).
A :class:`SyncJob` performs one node's request: descriptors of its own taken
under the lock, fdatasyncs without it, then the acks released, or the node
stopped if a sync failed (it never retries: fsyncgate). A
:class:`GroupSyncJob` makes several nodes' requests durable with one flush
of their shared file system (native/flush.py).

Group commit's invariants: an ack goes out only after a flush that started
after its frames' append returned; one flush at a time per file system (the
transport runs one job per syncer); the leader releases the transport's lock
only while it waits; a failed flush stops only the nodes whose files it
covered, and nothing it covered is acknowledged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..native.flush import Flusher, datasync
from ..protocol import messages as m
from ..protocol.node import StorageNode
from ..protocol.node_storage import Outgoing, SyncRequest
from ..protocol.segment import Segment
from .disk import RealDisk


@dataclass
class SyncJob:
    """One node's files to make durable and the acks to release once they are.

    The transport drives a job in steps: :meth:`start` and :meth:`index`
    (the lock held; a flush started by ``start`` runs meanwhile), :meth:`wait`
    (the lock released: it blocks on the disk), then :meth:`failures` and
    :meth:`deliveries` (the lock held again). A job never raises a disk's
    OSError: it keeps it, and :meth:`failures` stops the node.
    """

    node: StorageNode
    names: list[str]
    acks: Outgoing
    segments: list[Segment] = field(default_factory=list)  # with frames to index
    error: OSError | None = None
    descriptors: list[int] | None = None  # a real disk's files, this job's own (start)
    # (name, generation, growths, whole) of each file synced (RealDisk.flush_targets)
    targets: list[tuple[str, int, int, bool]] = field(default_factory=list)

    @classmethod
    def of(cls, node: StorageNode, request: SyncRequest) -> SyncJob:
        return cls(node, request.names, request.acks, request.segments)

    def start(self) -> None:
        """Takes descriptors of its own for a real disk's files (the lock held): wait
        runs unlocked, and a checkpoint may close the disk's meanwhile, after which
        its number may name another file."""
        disk = self.node.disk
        if isinstance(disk, RealDisk):
            self.descriptors = []
            try:
                for name, descriptor, generation, growths, whole in disk.flush_targets(self.names):
                    self.descriptors.append(os.dup(descriptor))
                    self.targets.append((name, generation, growths, whole))
            except OSError as error:
                self.error = error

    def settle_marks(self) -> None:
        """After a successful sync its files' growths are durable (the lock held)."""
        disk = self.node.disk
        if self.error is None and isinstance(disk, RealDisk):
            for name, generation, growths, _ in self.targets:
                disk.flushed(name, generation, growths)

    def index(self) -> None:
        """Indexes the frames being synced, in their segments' page logs (the lock held)."""
        for segment in self.segments:
            segment.index_frames()

    def wait(self) -> None:
        """Runs the fsyncs (on a sync thread, or the waiting one)."""
        disk = self.node.disk
        assert disk is not None
        try:
            if self.descriptors is None:
                for name in self.names:
                    disk.sync(name)
            elif self.error is None:
                for descriptor in self.descriptors:
                    datasync(descriptor)
        except OSError as error:
            self.error = error
        finally:
            self.close_descriptors()

    def close_descriptors(self) -> None:
        for descriptor in self.descriptors or ():
            os.close(descriptor)
        self.descriptors = []

    def deliveries(self) -> list[tuple[str, str, m.Message]]:
        """(source, destination, message) of the acks the sync releases (none if it failed)."""
        if self.error is not None:
            return []
        return [(self.node.name, destination, message) for destination, message in self.acks]

    def failures(self) -> list[tuple[str, OSError]]:
        """Stops the node if its sync failed; returns (node, error) for each node stopped."""
        self.settle_marks()
        if self.error is None:
            return []
        self.node.sync_failed(self.error)
        return [(self.node.name, self.error)]


@dataclass
class GroupSyncJob:
    """Several nodes' sync work on one file system, done by one flush (flush.py).

    The embedded default keeps all six nodes on the same device: one flush
    makes every node's frames durable at once, where six fsyncs would each
    flush the device. :meth:`start` hands the flush to the flusher's thread;
    a file's error stops only the node that owns it, and each node still
    acks only what this flush covered.
    """

    jobs: list[SyncJob]
    flusher: Flusher
    owners: list[SyncJob] = field(default_factory=list)  # the job of each file flushed

    def start(self) -> None:
        fds: list[int] = []
        whole: list[bool] = []
        for job in self.jobs:
            job.start()  # descriptors of its own, as for a sync of its own
            descriptors = job.descriptors or []
            fds += descriptors
            whole += [whole_file for _, _, _, whole_file in job.targets]
            self.owners += [job] * len(descriptors)
        if fds:
            try:
                self.flusher.start(fds, whole)
            except Exception as error:  # nothing was flushed: no node may ack
                self._close_descriptors()
                self._fail_owners(OSError(5, f"the flush could not start: {error!r}"))
                self.owners.clear()

    def index(self) -> None:
        for job in self.jobs:
            job.index()

    def wait(self) -> None:
        if not self.owners:
            return
        try:
            errors = self.flusher.wait()
        except Exception as error:  # the outcome is unknown: nothing counts as durable
            self._fail_owners(OSError(5, f"the flush failed: {error!r}"))
            return
        finally:
            self._close_descriptors()
        for job, number in zip(self.owners, errors, strict=True):
            if number and job.error is None:
                job.error = OSError(number, f"flush: {os.strerror(number)}")

    def _fail_owners(self, error: OSError) -> None:
        for job in self.owners:
            job.error = job.error or error

    def _close_descriptors(self) -> None:
        for job in self.jobs:
            job.close_descriptors()

    def deliveries(self) -> list[tuple[str, str, m.Message]]:
        return [delivery for job in self.jobs for delivery in job.deliveries()]

    def failures(self) -> list[tuple[str, OSError]]:
        return [failure for job in self.jobs for failure in job.failures()]


def group_syncer(
    nodes: Callable[[], list[StorageNode]], flusher: Flusher
) -> Callable[[], GroupSyncJob | None]:
    """One syncer for the nodes ``nodes()`` names, sharing a file system (GroupSyncJob).

    ``nodes`` is asked each time, so a node reloaded after a failure takes part.
    """

    def begin() -> GroupSyncJob | None:
        current = nodes()
        jobs = [
            SyncJob.of(node, request)
            for node in current
            if not node.failed and (request := node.begin_sync())
        ]
        return GroupSyncJob(jobs, flusher) if jobs else None

    return begin


def node_syncer(node: StorageNode) -> Callable[[], SyncJob | None]:
    """A node's own syncer: its due request as a job (per-node fsyncs)."""

    def begin() -> SyncJob | None:
        request = node.begin_sync()
        return None if request is None else SyncJob.of(node, request)

    return begin
