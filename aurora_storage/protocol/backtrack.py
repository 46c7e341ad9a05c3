"""Backtrack: rewind the live volume to a time inside its window, in place.

Non-destructive (protocol/history.py): each backtrack adds a history version
that hides what came after the last commit at or before the target, written
whole to a write quorum of nodes (the history register); a later backtrack
can move forward again. The window's bookkeeping (commits and record bytes
inside it, the floor below which versions may be folded) lives here too,
rebuilt from storage after an open.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import Moment, format_time, parse_target, resolve_target
from ..config import READ_TIMEOUT
from ..errors import (
    BacktrackDisabledError,
    BacktrackQuorumError,
    ReadUnavailableError,
    TimeOutsideWindowError,
    WriteQuorumError,
)
from . import messages as m
from .history import HistoryVersion, inside, merge_ranges, truncation_ranges
from .node import failed_nodes
from .protection_group import READ_QUORUM
from .writer import Writer


@dataclass(frozen=True)
class BacktrackResult:
    """Where a backtrack landed: the last commit at or before the target time."""

    target: float
    lsn: int  # the CPL now last visible (0: the empty volume)
    commit_time: float
    history_version: int


class Backtracking(Writer):
    """Backtrack and the backtrack window."""

    def _note_commit(self, time: float, cpl: int, size: int) -> None:
        self._window_commits.append((time, cpl, size))
        self._window_bytes += size

    def _window_floor(self) -> int:
        """LSN below which no backtrack can reach: the last commit before the window."""
        if not self.options.backtrack_window:
            return self._vdl
        start = self.clock.now() - self.options.backtrack_window
        budget = self.options.backtrack_budget
        commits = self._window_commits
        while commits and (
            commits[0][0] < start or (budget and self._window_bytes > budget and len(commits) > 1)
        ):
            time, cpl, size = commits.popleft()
            self._window_bytes -= size
            self._window_floor_lsn = cpl
            self._window_floor_time = max(self._window_floor_time, time)
        self._window_floor_time = max(self._window_floor_time, start, self.history.created_at)
        if self.backup_store is None:  # a backup needs old versions for its restores
            self.history.forget_before(self._window_floor_time)
        return self._window_floor_lsn

    @property
    def backtrack_window(self) -> tuple[float, float]:
        """(earliest, latest) times backtrack can reach now; raises if backtrack is off."""
        self._check_open()
        if not self.options.backtrack_window:
            raise BacktrackDisabledError()
        with self.transport.lock:
            self._window_floor()
            return self._window_floor_time, max(self.clock.now(), self._last_commit_time)

    def _last_commit_at(
        self, moment: float, annulled: tuple[int, ...] | None = None
    ) -> tuple[int, float]:
        """(CPL, time) of the last visible commit at or before ``moment``, asking the nodes."""
        cpl, cpl_time, _, _ = self._ask_time_index(moment, annulled)
        return cpl, cpl_time

    def _ask_time_index(
        self, moment: float, annulled: tuple[int, ...] | None = None
    ) -> tuple[int, float, float, int]:
        """(CPL, time, floor time, folded LSN): the last visible commit at or before
        ``moment``, the earliest moment the answering nodes' time indexes serve, and
        the highest LSN their segments folded into page images.

        Each node bisects its segments' time indexes; a read quorum of trusted
        answers of every member set is needed, since every durable CPL is on four
        of its PG's six segments.
        """
        if annulled is None:
            version = self.history.at(moment)
            hidden = version.annulled if version is not None else ()
            annulled = merge_ranges(hidden, truncation_ranges(self.truncations))
        request_id = next(self._request_ids)
        answers: dict[str, m.TimeAnswer] = {}
        self._time_answers[request_id] = answers
        live = [name for name, node in self.nodes.items() if self.cluster.is_up(name)]
        try:
            query = m.TimeQuery(request_id, moment, annulled)
            for name in live:
                self.transport.send(self.writer_name, name, query)
            self.transport.run_until(lambda: len(answers) == len(live), READ_TIMEOUT)
        finally:
            del self._time_answers[request_id]
        trusted = [answer for answer in answers.values() if answer.trusted]
        if not self.placement.covers_read(answer.node for answer in trusted):
            shortfall = self.placement.shortfall([a.node for a in trusted], READ_QUORUM)
            raise ReadUnavailableError(
                0,
                0,
                f"only {len(trusted)} nodes answered the time index query; {shortfall}",
            )
        best = max(trusted, key=lambda answer: answer.cpl)
        floor_time = max(answer.floor_time for answer in trusted)
        folded_lsn = max(answer.folded_lsn for answer in trusted)
        return best.cpl, best.time, floor_time, folded_lsn

    def backtrack(self, to: Moment) -> BacktrackResult:
        """Rewinds the live volume to its last commit at or before ``to``, in place.

        Non-destructive: the undone commits stay until they leave the window, so
        a later backtrack may move forward again to any time in the window.
        Writes afterwards get LSNs above everything ever allocated. Raises
        :class:`BacktrackDisabledError`, :class:`TimeOutsideWindowError` (also
        when the nodes' history cannot serve the time), :class:`InDoubtError`
        while an earlier commit or backtrack is in doubt, or
        :class:`BacktrackQuorumError` when the new history does not reach a write
        quorum; on any error the visible state does not change. ``to`` is any time
        clock.py reads (``-2h`` and ``now`` on the volume's clock), or ``"earliest"``
        or ``"latest"``: the ends of :attr:`backtrack_window` as the backtrack runs.
        """
        self._check_open()
        self._refuse_if_readonly("a backtrack")
        parse_target(to)  # a time that cannot be read raises before anything runs
        with self.transport.lock:
            self._check_open()
            if not self.options.backtrack_window:
                raise BacktrackDisabledError()
            if self._degraded:
                self._complete_recovery()
            self._resolve_doubts()
            earliest, latest = self.backtrack_window
            target = resolve_target(to, earliest, latest, self.clock.now())
            if not earliest <= target <= latest:
                raise TimeOutsideWindowError(target, earliest, latest)
            self._wait_all_durable("backtrack waits for every commit to be durable")
            cpl, cpl_time = self._landing(target, earliest, latest)
            return self._rewrite_history(target, cpl, cpl_time)

    def _wait_all_durable(self, why: str) -> None:
        """Returns once every allocated LSN is durable; raises WriteQuorumError if none came."""
        if self.allocated_lsn > self._lal_base() and not self.transport.run_until(
            lambda: self._lal_base() >= self.allocated_lsn, self.options.commit_timeout
        ):
            raise WriteQuorumError(self.allocated_lsn, self._vdl, why)

    def _landing(self, target: float, earliest: float, latest: float) -> tuple[int, float]:
        """(CPL, time) of the commit a backtrack to ``target`` lands on, from the nodes;
        raises if they no longer keep the history of ``target`` in [earliest, latest]."""
        cpl, cpl_time, floor_time, folded_lsn = self._ask_time_index(target)
        if target < floor_time or cpl < folded_lsn:
            # The window this writer believes in is wider than what storage kept
            # (the nodes dropped or folded that history): refuse, never land wrong.
            raise TimeOutsideWindowError(
                target,
                max(earliest, floor_time),
                latest,
                f"storage keeps no history that far back (commits before "
                f"{format_time(floor_time)} dropped, LSNs up to {folded_lsn} folded into pages)",
            )
        return cpl, cpl_time

    def _rewrite_history(self, target: float, cpl: int, cpl_time: float) -> BacktrackResult:
        """Writes the history that hides everything above ``cpl`` to a write quorum."""
        version = self.history.at(target)
        assert version is not None, "the window starts after the volume was created"
        hidden = version.annulled
        if cpl < self.allocated_lsn:
            hidden = merge_ranges(hidden, (cpl, self.allocated_lsn))
        now = max(self.clock.now(), self._last_commit_time)
        new = HistoryVersion(self.history.current.version + 1, now, hidden, "backtrack")
        candidate = self.history.with_version(new, self._next_history_key())
        acks = self._write_history(candidate)
        reached = len(acks)
        if not self.placement.covers_write(acks):
            self._raise_if_fenced()
            # Some nodes may hold the candidate: rewrite the history this session
            # keeps above it at once, or stay in doubt until that succeeds.
            self._history_in_doubt = target
            resolved = self._abandon_history()
            raise BacktrackQuorumError(
                target, self._vdl, reached, not resolved, failed_nodes(self.nodes)
            )
        self.history = candidate
        self._last_commit_time = now
        self._refresh_annulled()
        return BacktrackResult(target, cpl, cpl_time, new.version)

    def _ask_window(self, since: float) -> list[m.WindowAnswer]:
        """The live nodes' window answers (WindowQuery), as many as answer in time."""
        request_id = next(self._request_ids)
        answers: dict[str, m.WindowAnswer] = {}
        self._window_answers[request_id] = answers
        live = [name for name, node in self.nodes.items() if not node.failed]
        try:
            for name in live:
                self.transport.send(self.writer_name, name, m.WindowQuery(request_id, since))
            self.transport.run_until(lambda: len(answers) == len(live), READ_TIMEOUT)
        finally:
            del self._window_answers[request_id]
        return list(answers.values())

    def _rebuild_window(self, answers: list[m.WindowAnswer]) -> None:
        """The backtrack window's commits and bytes after an open, from storage.

        The commits (CPL, time) are every commit a trusted node's segments index
        in the window; the bytes, what each PG's page log holds above its
        coalesced point (the most any trusted node holds), shared among the
        commits by the LSNs each spans: the sizes a writer noted at commit are
        not stored, so the budget after a reopen works on this estimate.
        """
        trusted = [answer for answer in answers if answer.trusted]
        if not trusted:
            return
        times: dict[int, float] = {}
        pg_bytes: dict[int, int] = {}
        for answer in trusted:
            for cpl, moment in zip(answer.cpls, answer.times, strict=True):
                if cpl > self._window_floor_lsn and not inside(cpl, self.annulled):
                    times[cpl] = moment
            for i in range(0, len(answer.record_bytes), 2):
                pg_id, size = answer.record_bytes[i], answer.record_bytes[i + 1]
                pg_bytes[pg_id] = max(pg_bytes.get(pg_id, 0), size)
        cpls = sorted(times)
        if not cpls:
            return
        total = sum(pg_bytes.values())
        span = cpls[-1] - self._window_floor_lsn
        previous = self._window_floor_lsn
        self._window_commits.clear()
        self._window_bytes = 0
        for cpl in cpls:
            self._note_commit(times[cpl], cpl, total * (cpl - previous) // span)
            previous = cpl
