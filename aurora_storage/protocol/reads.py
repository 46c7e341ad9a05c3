"""Reads: one segment serves a page at a read point, hedged after a delay.

A read point is VDL or an older consistent point (pinned by a read view so
segments keep its versions). The writer asks one segment whose acknowledged
SCL covers the PG's records up to the read point
(ProtectionGroup.required_scl), best first by observed latency
(protocol/hedging.py); after the hedge delay the next one is asked too. No
quorum read happens outside recovery.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from .. import checks
from ..config import READ_HEDGE_DELAY, READ_TIMEOUT
from ..errors import (
    InvalidArgumentError,
    LsnOutOfRangeError,
    PageOutOfRangeError,
    ReadUnavailableError,
    VersionGoneError,
)
from . import messages as m
from .node import GONE
from .writer import PendingRead, Writer


def answered_by(pending: PendingRead, node: str) -> bool:
    return pending.image is not None or node in pending.answered


class Reading(Writer):
    """The read path of the writer."""

    def read_page(self, page_no: int, lsn: int | None = None) -> bytes:
        """The page's bytes at ``lsn`` (default: the current VDL), from one segment."""
        with self.transport.lock:
            return self._read_page_locked(page_no, lsn)

    def _read_page_locked(self, page_no: int, lsn: int | None) -> bytes:
        self._check_open()
        if type(page_no) is not int or not 0 <= page_no < self.geometry.page_count:
            page_no = self._page_number(page_no)
        read_point = self._vdl if lsn is None else self._read_point(lsn)
        pg = self.pgs.get(self.geometry.pg_of(page_no))
        if pg is None or read_point == 0:
            return bytes(self.geometry.page_size)
        required = pg.required_scl(read_point, self._vdl)
        candidates = pg.readable_nodes(required)
        if not candidates:
            raise ReadUnavailableError(page_no, read_point, "no segment has acknowledged it")
        if self._direct:
            return self._read_direct(pg.pg_id, page_no, read_point, required, candidates)
        ranking = self.read_ranking
        candidates = ranking.order(candidates, self.transport.now())
        request_id = next(self._request_ids)
        request = m.ReadPage(request_id, pg.pg_id, page_no, read_point, required, self.annulled)
        pending = self._reads[request_id] = PendingRead(page_no)
        asked: dict[str, float] = {}  # node: transport time it was asked
        retried: set[str] = set()
        try:
            while candidates:
                for node in candidates:
                    pending.answered.pop(node, None)
                    asked[node] = self.transport.now()
                    self.transport.send(self.writer_name, node, request)
                    answered = functools.partial(answered_by, pending, node)
                    if self.transport.run_until(answered, READ_HEDGE_DELAY) and pending.image:
                        return pending.image
                # Every candidate was asked; wait a while longer for a late answer.
                self.transport.run_until(
                    lambda: pending.image is not None or len(pending.answered) == len(asked),
                    READ_TIMEOUT,
                )
                if pending.image is not None:
                    return pending.image
                # Segments heard from meanwhile (an SCL that rose: a node that caught
                # up or was repaired) may serve it too: they are asked as well; then,
                # once, those that answered with a problem (they may have caught up).
                readable = pg.readable_nodes(required)
                candidates = [n for n in readable if n not in asked]
                if not candidates:
                    candidates = [n for n in pending.answered if n in readable and n not in retried]
                    retried.update(candidates)
        finally:
            del self._reads[request_id]
            now = self.transport.now()
            for node, started in asked.items():
                answered_at = pending.answered.get(node)
                if answered_at is not None:
                    ranking.answered(node, answered_at - started)
                elif now - started >= READ_HEDGE_DELAY:
                    ranking.silent(node, now)  # it had its time; another served, or none
            # An answer still on its way clears the silence and gives its latency.
            ranking.finished(
                request_id, {n: t for n, t in asked.items() if n not in pending.answered}
            )
        if any(problem.endswith(GONE) for problem in pending.problems):
            raise VersionGoneError(page_no, read_point)
        detail = "; ".join(pending.problems) or f"no answer from {', '.join(asked)}"
        raise ReadUnavailableError(page_no, read_point, detail)

    def _read_direct(
        self, pg_id: int, page_no: int, read_point: int, required: int, candidates: list[str]
    ) -> bytes:
        """The in-process read: one synchronous call per segment, in order of preference.

        The direct transport's nodes live in this process, so the request is a
        method call (no message objects); a node that is down or cut off is
        skipped as it would be on the wire.
        """
        problems = []
        writer = self.writer_name
        for name in candidates:
            if not self.transport.link_open(writer, name):
                problems.append(f"{name}: no answer")
                continue
            image, problem, _ = self.nodes[name].serve_read(
                pg_id, page_no, read_point, required, self.annulled
            )
            if not problem:
                return cast(bytes, image)
            problems.append(f"{name}: {problem}")
        if any(problem.endswith(GONE) for problem in problems):
            raise VersionGoneError(page_no, read_point)
        raise ReadUnavailableError(page_no, read_point, "; ".join(problems))

    def _page_number(self, page_no: Any) -> int:
        """``page_no`` as a page of this volume (any integer type but bool)."""
        count = self.geometry.page_count
        try:
            number = checks.integer("page_no", page_no, InvalidArgumentError)
        except InvalidArgumentError:
            raise PageOutOfRangeError(page_no, count) from None
        if not 0 <= number < count:
            raise PageOutOfRangeError(page_no, count)
        return number

    def _read_point(self, lsn: Any) -> int:
        """``lsn`` as a read point: an int from 0 to VDL."""
        try:
            read_point = checks.integer("lsn", lsn, InvalidArgumentError)
        except InvalidArgumentError:
            raise LsnOutOfRangeError(lsn, self._vdl) from None
        if not 0 <= read_point <= self._vdl:
            raise LsnOutOfRangeError(lsn, self._vdl)
        return read_point

    @contextmanager
    def read_view(self, lsn: int | None = None) -> Iterator[int]:
        """Pins a read point (default VDL) so segments keep its versions while the block runs."""
        with self.transport.lock:
            self._check_open()
            read_point = self._vdl if lsn is None else self._read_point(lsn)
        self._pinned.append(read_point)
        try:
            yield read_point
        finally:
            self._pinned.remove(read_point)
