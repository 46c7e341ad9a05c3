"""The writer's side of continuous backup: staging rounds, off the commit path.

A staging round (:meth:`Stager.run_round`) stages every PG's frames up to the
VDL it starts at: for each PG one healthy segment's node builds a LOG object
(protocol/stage.py), the round uploads it, then records the round (a ``rounds/``
manifest naming the CPLs and the objects it staged), takes PAGES objects of
PGs that are due one, and applies retention. The writer keeps a catalog of
what the store holds in memory (backup.StagingState, loaded once when the
backup is attached), so the restorable window, ``status()`` and retention
make no store call but the deletes themselves.

Threads and locks. The transport's lock guards protocol state; a round takes
it only to read or change state (to choose a segment per PG and let its node
build the object, to record what was staged), never while it encodes or
uploads an object, so a slow store holds up no commit. With background
staging (the default on a wall clock) rounds run on one worker thread per
volume: a commit that crosses the staging interval asks for a round and
returns. At most STAGING_QUEUE_ROUNDS_MAX requests wait behind the running
round; a committer that finds the queue full waits for room (outside the
lock, at most its commit timeout): backpressure, so a store slower than the
write rate slows the committers down instead of letting unstaged log pile up
in the segments (they keep every frame the backup has not staged). The worker
also runs a round once a staging interval when no commit asked for one, so
the latest restorable time of an idle volume keeps up with the clock. With
inline staging (the default on a simulated clock or transport, whose runs
must replay exactly) the committing thread runs the round itself, after its
commit, outside the lock. Either way :meth:`Stager.stage_now` runs a round
and waits for it.

Invariants: a PG's staged LSN grows only once its object is in the store; a
round is recorded only after every object it names is in the store, and
names every object staged since the round before it; the history object with
a later earliest restorable time is in the store before retention deletes
anything only older restores needed; the rounds, PAGES and LOG objects a
restore inside the window needs are never deleted; a staging failure never
fails a commit (``status()["backup"]["last_error"]`` says what failed).
"""

from __future__ import annotations

import functools
import math
import threading
import time as wall
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import backup
from ..errors import AuroraStorageError, ConfigurationError
from ..format.objects import HISTORY_NAME, KIND_MANIFEST, encode_object, round_name
from ..protocol import messages as m
from ..protocol.history import inside, merge_ranges, truncation_ranges
from ..protocol.stage import Upload
from ..protocol.writer import Writer
from .store import BackupStore

STAGING_QUEUE_ROUNDS_MAX = 1  # round requests that wait behind the running round
CLOSE_WAIT_SECONDS = 60.0  # close waits this long for the rounds asked for, then leaves them
MODES = ("background", "inline")


def check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise ConfigurationError(f"backup_staging {mode!r} must be one of {list(MODES)} or None")


def _work(stager_ref: weakref.ref[Stager], changed: threading.Condition) -> None:
    """A background stager's worker thread: runs the rounds asked for, until the
    stager stops or is gone. It holds no reference to the stager while it waits."""
    while True:
        with changed:
            stager = stager_ref()
            if stager is None:
                return
            request, wait_seconds = stager._next_request()
            del stager
            if request is None:
                if not wait_seconds:
                    return
                changed.wait(wait_seconds)
                continue
        stager = stager_ref()
        if stager is None:
            request.finish(False)
            return
        stager._run_request(request)
        del stager


def _has_reply(replies: dict[int, m.Staged | None], request_id: int) -> bool:
    return replies.get(request_id) is not None


@dataclass
class _Request:
    """A round asked for: whoever asked may wait for its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    result: bool = False

    def finish(self, result: bool) -> None:
        self.result = result
        self.done.set()


class Stager:
    """Runs one volume's staging rounds (module docstring), inline or on a worker."""

    def __init__(
        self, volume: Writer, store: BackupStore, mode: str, options: backup.BackupOptions
    ) -> None:
        check_mode(mode)
        self.volume = volume
        self.store = store
        self.options = options
        self.state: backup.StagingState = volume.staging
        self.interval = options.staging_interval
        self.mode = mode
        self._round_lock = threading.Lock()  # one round at a time, whoever runs it
        self._changed = threading.Condition()  # guards the queue; never the transport's lock
        self._queue: deque[_Request] = deque()
        self._stopping = False
        self._started = volume.clock.now()
        self._thread: threading.Thread | None = None
        if mode == "background":
            # The worker holds the stager weakly: a volume dropped without close
            # is collected, and its worker ends.
            self._thread = threading.Thread(
                target=_work, args=(weakref.ref(self), self._changed), name="aurora-staging"
            )
            self._thread.daemon = True
            self._thread.start()

    # --- asking for rounds -----------------------------------------------------------

    def after_commit(self, moment: float) -> None:
        """After a commit at ``moment``, the transport's lock released: a round once
        per staging interval. The commit is durable: nothing here may raise."""
        if moment - self.state.last_round_time < self.interval:
            return
        if self.mode == "inline":
            try:
                self.stage_now(None)
            except Exception as error:  # a store backend's own error: recorded, not raised
                self.state.last_error = f"{type(error).__name__}: {error}"
            return
        with self._changed:
            if moment - self.state.last_round_time < self.interval or self._stopping:
                return  # another committer asked already
            self.state.last_round_time = moment
            self._enqueue(wall.monotonic() + self.volume.options.commit_timeout)

    def _enqueue(self, deadline: float | None) -> _Request | None:
        """Queues a request once there is room (backpressure), or None at the deadline;
        the caller holds ``_changed``. A request waiting already would stage the same
        commits: the caller joins it instead."""
        while len(self._queue) >= STAGING_QUEUE_ROUNDS_MAX and not self._stopping:
            remaining = None if deadline is None else deadline - wall.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._changed.wait(remaining)
        if self._stopping:
            return None
        request = _Request()
        self._queue.append(request)
        self._changed.notify_all()
        return request

    def stage_now(self, timeout: float | None = None) -> bool:
        """Runs a round (or joins one not yet started) and waits for it: True when it
        recorded a round or had nothing to stage, False when it failed (last_error)
        or did not finish within ``timeout`` seconds."""
        if self.mode == "inline":
            return self.run_round()
        deadline = None if timeout is None else wall.monotonic() + timeout
        with self._changed:
            request = self._queue[-1] if self._queue else self._enqueue(deadline)
        if request is None:
            return False
        remaining = None if deadline is None else max(0.0, deadline - wall.monotonic())
        return request.done.wait(remaining) and request.result

    @property
    def pending_rounds(self) -> int:
        """Round requests waiting for the worker."""
        return len(self._queue)

    def _next_request(self) -> tuple[_Request | None, float]:
        """The worker's next round, or None and how long to wait for one (0: stop).
        The caller holds ``_changed``. With no request for a staging interval (the
        first counted from the start: opening a volume uploads nothing), an idle
        round keeps the latest restorable time up."""
        if not self._queue and not self._stopping:
            last = max(self._started, self.state.last_round_time)
            idle = self.interval - (self.volume.clock.now() - last)
            if idle > 0:
                return None, min(idle, self.interval)
            self._queue.append(_Request())
        if not self._queue:
            return None, 0.0  # stopping, and every round asked for has run
        self._changed.notify_all()  # room for a committer waiting to ask
        return self._queue.popleft(), 0.0

    def _run_request(self, request: _Request) -> None:
        try:
            result = self.run_round()
        except Exception as error:  # a store backend's own error: the worker goes on
            self.state.last_error = f"{type(error).__name__}: {error}"
            result = False
        request.finish(result)

    def close(self, finish: bool = True) -> None:
        """Stops staging: with ``finish``, after the rounds asked for have run (waiting
        at most CLOSE_WAIT_SECONDS for a slow store); without (a crash), at once."""
        with self._changed:
            self._stopping = True
            if not finish:
                while self._queue:
                    self._queue.popleft().finish(False)
            self._changed.notify_all()
        if self._thread is not None and finish and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT_SECONDS)

    # --- one round ---------------------------------------------------------------------

    def run_round(self) -> bool:
        """One staging round; False (and last_error) if it failed. Never raises for a
        store error or a PG no segment could stage: the next round retries."""
        with self._round_lock:
            try:
                return self._round()
            except (AuroraStorageError, OSError) as error:
                self.state.last_error = f"{type(error).__name__}: {error}"
                return False

    def _history_object(self) -> bytes:
        """The volume's history object as of now; the caller holds the transport's lock."""
        volume = self.volume
        return backup.history_object(
            volume.volume_id,
            volume.options,
            volume.history,
            volume.truncations,
            self.state.earliest,
        )

    def _volume_closed(self) -> bool:
        """True once the volume closed (or crashed): a round then records nothing more."""
        return self.volume._closed

    def history_signature(self) -> int:
        volume = self.volume
        return hash(
            (volume.history.current.version, tuple(volume.truncations), self.state.earliest)
        )

    def _round(self) -> bool:
        """One staging round: each PG's base if due, the frames since the last round,
        PAGES objects if due, the manifest, then expiry. False if the round failed
        (``state.last_error`` says why) or the volume closed first."""
        volume, state = self.volume, self.state
        lock = volume.transport.lock
        with lock:
            if self._volume_closed():
                return False
            now = volume.clock.now()
            state.last_round_time = now
            upto = volume._vdl
            if (
                upto <= state.last_round_vdl
                and state.history_written == self.history_signature()
                and now - state.last_round_time_recorded < self.interval
            ):
                return True  # nothing new to stage or to name
        if not self._stage_bases(now):
            return False
        with lock:
            if self._volume_closed():
                return False
            built, failed = self._build(self._log_requests(upto), snapshot=False)
            in_flight = volume.allocated_lsn > volume._lal_base()
            allocated = volume.allocated_lsn
        if not self._upload_logs(built, failed, upto, now):
            return False
        self._take_snapshots(now)  # before the manifest, so that it names them
        if not self._record(upto, now, in_flight, allocated):
            return False
        self._expire(now)
        return True

    def _stage_bases(self, now: float) -> bool:
        """Stages the pages of each PG at the volume's base, if not done yet; False on a
        failure. A restored volume holds no frame below its base, nor may a volume
        given a new backup: each PG's backup begins with its pages there, and a
        round names the base commit."""
        lock, state = self.volume.transport.lock, self.state
        with lock:
            base_lsn, base_time = state.base
            if not base_lsn:
                return True
            due = [pg for pg in self.volume.pgs if state.staged_lsn.get(pg, 0) < base_lsn]
        for pg_id in due:
            problem = self._stage_pages(pg_id, base_lsn, now)
            if problem:
                state.last_error = f"PG {pg_id}: {problem}"
                return False
            with lock:
                state.staged_lsn[pg_id] = max(state.staged_lsn.get(pg_id, 0), base_lsn)
        with lock:
            base = (base_lsn, base_time)
            if state.last_cpl[0] < base_lsn and base not in state.unnamed_cpls:
                state.unnamed_cpls.append(base)
        return True

    def _log_requests(self, upto: int) -> dict[int, tuple[int, int]]:
        """The (staged, upto) LSN range of each PG with frames to stage; a PG with none
        counts as staged to ``upto``. The caller holds the transport's lock."""
        volume, state = self.volume, self.state
        requests: dict[int, tuple[int, int]] = {}
        for pg in volume.pgs.values():
            staged = state.staged_lsn.get(pg.pg_id, 0)
            if pg.required_scl(upto, volume.vdl) <= staged:
                state.staged_lsn[pg.pg_id] = max(staged, upto)
                continue
            requests[pg.pg_id] = (staged, upto)
        return requests

    def _upload_logs(
        self, built: dict[int, Upload | None], failed: dict[int, str], upto: int, now: float
    ) -> bool:
        """Puts each PG's LOG object and marks the PG staged to ``upto``, its CPLs and
        object waiting to be named by the manifest; False if any PG failed."""
        lock, state = self.volume.transport.lock, self.state
        problem = next((f"PG {pg_id}: {why}" for pg_id, why in failed.items()), "")
        for pg_id, upload in built.items():
            if upload is not None:
                try:
                    self._put(upload)
                except (AuroraStorageError, OSError) as error:
                    problem = problem or f"PG {pg_id}: {type(error).__name__}: {error}"
                    continue
            with lock:
                # A PG's staged LSN only grows: the GC floor (writer.py) trusts it.
                assert state.staged_lsn.get(pg_id, 0) <= upto, (pg_id, state.staged_lsn, upto)
                state.staged_lsn[pg_id] = upto
                state.snapshot_time.setdefault(pg_id, now)
                if upload is not None:
                    meta = upload.meta
                    state.bytes_since_snapshot[pg_id] = (
                        state.bytes_since_snapshot.get(pg_id, 0) + upload.size
                    )
                    state.unnamed_cpls += zip(meta["cpls"], meta["times"], strict=True)
                    first, last = int(meta["first_lsn"]), int(meta["last_lsn"])
                    state.unnamed_logs.append((pg_id, first, last))
                    state.logs.setdefault(pg_id, []).append((first, last, upload.name))
        if problem:
            state.last_error = problem
            return False
        return True

    def _record(self, upto: int, now: float, in_flight: bool, allocated: int) -> bool:
        """Uploads the history if it changed, then the round's manifest; then the
        catalog in memory has the round. False if the volume closed (crashed) first."""
        volume, state, store = self.volume, self.state, self.store
        with volume.transport.lock:
            if self._volume_closed():
                return False
            signature = self.history_signature()
            history = None if signature == state.history_written else self._history_object()
            cpls = sorted(set(state.unnamed_cpls))
            if not cpls and state.last_cpl[0]:
                # Every round names the last CPL so far, so the newest round at or
                # before a time always holds the restore point of that time.
                cpls = [state.last_cpl]
            # A round names only commits it staged, each once, in LSN order.
            assert all(cpl <= upto for cpl, _ in cpls), (cpls, upto)
            assert len({cpl for cpl, _ in cpls}) == len(cpls), cpls
            round_time = self._round_time(cpls, now, in_flight, allocated)
            name, meta = self._manifest(upto, round_time, cpls)
            state.commit_time_floor = max(state.commit_time_floor, meta["time"])
            named = (len(state.unnamed_cpls), len(state.unnamed_logs), len(state.unnamed_pages))
        if history is not None:
            store.put(HISTORY_NAME, history)
            with volume.transport.lock:
                state.history_written = signature
        store.put(name, encode_object(KIND_MANIFEST, b"", meta))
        with volume.transport.lock:
            # Named by a recorded round now; had the upload failed, the next round would.
            del state.unnamed_cpls[: named[0]]
            del state.unnamed_logs[: named[1]]
            del state.unnamed_pages[: named[2]]
            state.last_error = ""
            if cpls:
                state.last_cpl = max(state.last_cpl, cpls[-1])
            state.last_round_vdl = upto
            state.last_round_time_recorded = meta["time"]
            if name != state.last_round_name:
                state.rounds.append((upto, meta["time"], name))
            state.last_round_name, state.last_round_meta = name, meta
        return True

    def _round_time(
        self, cpls: list[tuple[int, float]], now: float, in_flight: bool, allocated: int
    ) -> float:
        """The time a round stands for: a restore to it has exactly the commits the
        round names at or before it. The caller holds the transport's lock."""
        round_time = cpls[-1][1] if in_flight and cpls else now
        if cpls and cpls[-1][1] > round_time:
            # A commit stamped just after an earlier round at this clock time:
            # the round reaches its time, so a restore to the round's time has it.
            round_time = cpls[-1][1]
        if not in_flight and self.volume.allocated_lsn > allocated:
            # A commit since the round began may carry its time (a clock that did
            # not tick): the round ends just before, so a restore to its time
            # never misses a commit it does not name.
            round_time = math.nextafter(round_time, -math.inf)
        return max(round_time, self.state.last_round_time_recorded)

    def _manifest(
        self, upto: int, round_time: float, cpls: list[tuple[int, float]]
    ) -> tuple[str, dict[str, Any]]:
        """The round's manifest name and meta (docs/format.md, "Backup objects"); a
        second round in the same millisecond shares the first one's name, and its
        manifest names what both staged."""
        state = self.state
        meta: dict[str, Any] = {
            "vdl": upto,
            "time": round_time,
            "cpls": [cpl for cpl, _ in cpls],
            "times": [time for _, time in cpls],
            "previous": state.last_round_vdl if state.last_round_name else -1,
            "logs": [value for entry in state.unnamed_logs for value in entry],
            "pages": [value for entry in state.unnamed_pages for value in entry],
        }
        name = round_name(upto, round_time)
        if name == state.last_round_name:
            earlier = state.last_round_meta
            merged = sorted({*zip(earlier["cpls"], earlier["times"], strict=True), *cpls})
            meta["cpls"] = [cpl for cpl, _ in merged]
            meta["times"] = [time for _, time in merged]
            meta["previous"] = earlier.get("previous", meta["previous"])
            meta["logs"] = [*earlier.get("logs", ()), *meta["logs"]]
            meta["pages"] = [*earlier.get("pages", ()), *meta["pages"]]
        return name, meta

    def _build(
        self, requests: dict[int, tuple[int, int]], snapshot: bool
    ) -> tuple[dict[int, Upload | None], dict[int, str]]:
        """Under the transport's lock: one healthy segment per PG builds the PG's object
        (None: nothing to stage); another is asked if it cannot. Returns the objects
        and, per PG none could build, why."""
        volume = self.volume
        built: dict[int, Upload | None] = {}
        failed: dict[int, str] = {}
        names = list(volume.nodes)
        for pg_id, (staged, upto) in requests.items():
            pg = volume.pgs[pg_id]
            needed = pg.required_scl(upto, volume.vdl)
            start = pg_id % len(names)
            failed[pg_id] = "no healthy segment answered"
            for name in names[start:] + names[:start]:
                if pg.scls.get(name, 0) < needed or not volume.cluster.is_up(name):
                    continue
                request_id = next(volume._request_ids)
                volume._staged[request_id] = None
                stage = m.Stage(
                    request_id, pg_id, staged, upto, needed, int(snapshot), volume.annulled
                )
                volume.transport.send(volume.writer_name, name, stage)
                volume.transport.run_until(
                    functools.partial(_has_reply, volume._staged, request_id),
                    volume.options.commit_timeout,
                )
                reply = volume._staged.pop(request_id)
                upload = volume.nodes[name].take_upload(request_id)
                if reply is None:
                    continue
                if reply.problem:
                    failed[pg_id] = reply.problem
                    continue
                if reply.name and upload is None:
                    failed[pg_id] = f"{name} built {reply.name} but no longer holds it"
                    continue
                built[pg_id] = upload
                del failed[pg_id]
                break
        return built, failed

    def _put(self, upload: Upload) -> None:
        """Encodes and uploads one object; the caller holds no lock."""
        self.store.put(upload.name, upload.encode())

    def _stage_pages(self, pg_id: int, lsn: int, now: float) -> str:
        """A PAGES object of the PG at ``lsn``: built under the lock, uploaded outside
        it. Returns why it failed, or ""; a store error raises."""
        volume, state = self.volume, self.state
        with volume.transport.lock:
            if self._volume_closed():
                return "the volume closed"
            built, failed = self._build({pg_id: (0, lsn)}, snapshot=True)
        if failed:
            return failed[pg_id]
        upload = built[pg_id]
        if upload is not None:
            self._put(upload)
        with volume.transport.lock:
            state.bytes_since_snapshot[pg_id] = 0
            state.snapshot_time[pg_id] = now
            if upload is not None:
                state.unnamed_pages.append((pg_id, lsn))
                snapshots = state.snapshots.setdefault(pg_id, [])
                snapshots.append((lsn, upload.name))
                snapshots.sort()
        return ""

    def _take_snapshots(self, now: float) -> None:
        """PAGES objects for PGs with log staged since their last one: once it reaches
        SNAPSHOT_EVERY_BYTES, or once SNAPSHOT_EVERY_SECONDS have passed.

        A snapshot at a staged LSN the current history hides is not taken: its
        images would hide changes that restores to before the backtrack show.
        One at a visible LSN is right for every restore that lands at or after
        it with that LSN visible, whatever version: the versions after its
        commit all hide the same ranges below it. A failure is left for the next
        round to try again.
        """
        volume, state = self.volume, self.state
        with volume.transport.lock:
            annulled = volume.annulled
            due = [
                pg_id
                for pg_id, size in state.bytes_since_snapshot.items()
                if size > 0
                and (
                    size >= backup.SNAPSHOT_EVERY_BYTES
                    or now - state.snapshot_time.get(pg_id, now) >= backup.SNAPSHOT_EVERY_SECONDS
                )
                and not inside(state.staged_lsn.get(pg_id, 0), annulled)
            ]
        for pg_id in due:
            try:
                self._stage_pages(pg_id, state.staged_lsn[pg_id], now)
            except (AuroraStorageError, OSError):
                continue

    def _pg_bases(self, horizon: float, horizon_vdl: int) -> dict[int, int]:
        """Each PG's base for expiry: every version in effect at or after the horizon
        hides its own ranges (and every truncation), and a PG's base is the oldest of
        their bases. The caller holds the transport's lock."""
        volume, state = self.volume, self.state
        history = volume.history
        first = history.at(horizon) or history.versions[0]
        truncations = truncation_ranges(volume.truncations)
        hidden = [
            merge_ranges(version.annulled, truncations)
            for version in history.versions
            if version.version >= first.version
        ]
        return {
            pg_id: min(
                backup.newest_base(state.snapshots.get(pg_id, []), horizon_vdl, ranges)[0]
                for ranges in hidden
            )
            for pg_id in set(state.logs) | set(state.snapshots)
        }

    def _expire(self, now: float) -> None:
        """Deletes what no restore inside the restorable window needs.

        The horizon is retention (or the backtrack window, if longer) before
        ``now``; its round is the newest at or before it. For each PG and each
        history version in effect at or after the horizon, the version's base
        is the PG's newest PAGES object at or below that round's VDL that the
        version does not hide; the PG's base is the oldest of these. Older
        PAGES objects and LOG objects ending at or below the base go, and
        rounds below every base (and below the horizon's round). The earliest
        restorable time becomes the horizon, in the store's history first.
        Why that is enough: a restore to a time T after the horizon, in the
        version in effect at T, lands at or after that version's base (a
        commit it shows, made before the horizon), so the PAGES object it
        starts from is at or after the base; and a version a later backtrack
        makes shows the base of the version in effect at its target, which
        is after the horizon (the backtrack window ends there at the latest).
        """
        volume, state, store = self.volume, self.state, self.store
        lock = volume.transport.lock
        with lock:
            if self._volume_closed():
                return
            horizon = now - max(
                self.options.retention_days * backup.DAY, volume.options.backtrack_window
            )
            horizon_vdl = max((vdl for vdl, time, _ in state.rounds if time <= horizon), default=0)
            if horizon_vdl <= state.expired_vdl:
                return
            bases = self._pg_bases(horizon, horizon_vdl)
            keep_lsn = min([horizon_vdl, *bases.values()])
            doomed = [name for vdl, _, name in state.rounds if vdl < keep_lsn]
            for pg_id, base in bases.items():
                if base:
                    doomed += [n for lsn, n in state.snapshots.get(pg_id, []) if lsn < base]
                    doomed += [n for _, last, n in state.logs.get(pg_id, []) if last <= base]
            state.earliest = max(state.earliest, horizon)
            signature = self.history_signature()
            history_data = self._history_object()
        store.put(HISTORY_NAME, history_data)
        with lock:
            state.history_written = signature
        for name in doomed:
            store.delete(name)
        with lock:
            state.rounds = [entry for entry in state.rounds if entry[0] >= keep_lsn]
            for pg_id, base in bases.items():
                if base:
                    state.snapshots[pg_id] = [e for e in state.snapshots[pg_id] if e[0] >= base]
                    state.logs[pg_id] = [e for e in state.logs.get(pg_id, []) if e[1] > base]
            state.expired_vdl = horizon_vdl
