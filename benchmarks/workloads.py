"""Rows, commits and SQLite baselines shared by bench_volume.py and bench_durability.py.

A *row* is one redo record as a database writer would send it: a payload at
an offset of a page. The subject commits rows through the public API, one
``tx.write`` a row; the SQLite baselines insert the same rows, one
``execute`` a row (or one ``executemany`` a transaction), into::

    CREATE TABLE redo (page INTEGER, offset INTEGER, data BLOB,
                       PRIMARY KEY (page, offset)) WITHOUT ROWID

or, for the strongest baseline of concurrent durable commits, a plain rowid
table (``rowid=True``): appends with no key to maintain, as a redo log is.
Threads of one process that commit to SQLite at once either let SQLite's busy
handler make them wait (it sleeps, 1 ms and longer, on every conflict) or take
turns on a lock of their own (``lock=``), which wastes no time asleep.

Every round of a workload gets pages no earlier round touched (SQLite needs
fresh keys, and a fresh page makes the expected image easy to state), in a
seeded shuffled order, so that both sides insert the same rows in the same
order and can be checked afterwards, page by page.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aurora_storage import Volume

PAGE_SIZE = 16 * 1024
ROW_BYTES = 100
SLOTS_PER_PAGE = 10  # rows a page holds in one round
SLOT_BYTES = 1600  # distance between the rows of a page
BUSY_TIMEOUT_MS = 30_000  # SQLite writers wait this long for the write lock
SQLITE_CACHE_KIB = 256 * 1024  # large enough that every baseline reads from SQLite's own cache

assert SLOTS_PER_PAGE * SLOT_BYTES <= PAGE_SIZE and ROW_BYTES <= SLOT_BYTES

Row = tuple[int, int, bytes]  # page_no, offset, payload
Mtr = list[Row]  # the rows of one commit


@dataclass(frozen=True)
class RowPlan:
    """The rows of every round, cut into commits: ``rounds[r][c]`` is commit ``c`` of round ``r``."""

    rounds: list[list[Mtr]]
    first_page: int
    pages_per_round: int

    @property
    def rows_per_round(self) -> int:
        return sum(len(mtr) for mtr in self.rounds[0])

    @property
    def mtrs_per_round(self) -> int:
        return len(self.rounds[0])

    def rows(self, round_number: int) -> list[Row]:
        return [row for mtr in self.rounds[round_number] for row in mtr]

    def expected_pages(self, round_number: int) -> dict[int, bytes]:
        """Images of the pages round ``round_number`` wrote (they were zeros before)."""
        pages: dict[int, bytearray] = {}
        for page_no, offset, data in self.rows(round_number):
            image = pages.setdefault(page_no, bytearray(PAGE_SIZE))
            image[offset : offset + len(data)] = data
        return {page_no: bytes(image) for page_no, image in pages.items()}


def row_plan(
    rounds: int, mtrs_per_round: int, rows_per_mtr: int, seed: int, first_page: int = 0
) -> RowPlan:
    rng = random.Random(seed)
    rows_per_round = mtrs_per_round * rows_per_mtr
    pages_per_round = -(-rows_per_round // SLOTS_PER_PAGE)
    plan = []
    for round_number in range(rounds):
        base = first_page + round_number * pages_per_round
        cells = [
            (base + i // SLOTS_PER_PAGE, (i % SLOTS_PER_PAGE) * SLOT_BYTES)
            for i in range(rows_per_round)
        ]
        rng.shuffle(cells)
        payload = rng.randbytes(rows_per_round * ROW_BYTES)
        rows = [
            (page_no, offset, payload[i * ROW_BYTES : (i + 1) * ROW_BYTES])
            for i, (page_no, offset) in enumerate(cells)
        ]
        plan.append([rows[i : i + rows_per_mtr] for i in range(0, rows_per_round, rows_per_mtr)])
    return RowPlan(plan, first_page, pages_per_round)


def sample_rounds(done: int) -> list[int]:
    """Rounds worth checking after ``done`` rounds ran: the first, one in the middle, the last."""
    return sorted({0, done // 2, done - 1})


# --- the subject ------------------------------------------------------------------


class CountingRounds:
    """The subject's rounds for ``interleave``: commits round ``n`` and counts rounds run."""

    def __init__(self, run: Callable[[int], object]) -> None:
        self.run = run
        self.done = 0

    def __call__(self, number: int) -> None:
        self.run(number)
        self.done = number + 1


def commit_mtrs(volume: Volume, mtrs: Iterable[Mtr]) -> None:
    """One transaction per MTR, one ``tx.write`` per row: the public API as a database uses it."""
    for mtr in mtrs:
        with volume.transaction() as tx:
            for page_no, offset, data in mtr:
                tx.write(page_no, offset, data)


def check_volume(volume: Volume, plan: RowPlan, rounds: Iterable[int]) -> None:
    for round_number in rounds:
        for page_no, image in plan.expected_pages(round_number).items():
            if volume.read_page(page_no) != image:
                raise AssertionError(f"page {page_no} (round {round_number}) reads wrong bytes")


# --- SQLite -----------------------------------------------------------------------

INSERT = "INSERT INTO redo (page, offset, data) VALUES (?, ?, ?)"


def sqlite_connect(
    path: Path, synchronous: str, any_thread: bool = False, rowid: bool = False
) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous`` (OFF or FULL); creates the table
    (keyed by (page, offset), or a plain rowid table with ``rowid``)."""
    connection = sqlite3.connect(
        path,
        isolation_level=None,  # autocommit: transactions are the explicit BEGIN/COMMIT below
        check_same_thread=not any_thread,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    (journal,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
    assert journal == "wal", f"SQLite refused WAL mode ({journal})"
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    connection.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    if rowid:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS redo (page INTEGER, offset INTEGER, data BLOB)"
        )
    else:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS redo (page INTEGER, offset INTEGER, data BLOB, "
            "PRIMARY KEY (page, offset)) WITHOUT ROWID"
        )
    return connection


def sqlite_insert_rows(
    connection: sqlite3.Connection, mtrs: Iterable[Mtr], lock: threading.Lock | None = None
) -> None:
    """One transaction per MTR, one ``execute`` per row (a lone row commits by itself);
    with ``lock``, each transaction holds it (writers of one process take turns)."""
    execute = connection.execute
    for mtr in mtrs:
        with lock or contextlib.nullcontext():
            if len(mtr) == 1:
                execute(INSERT, mtr[0])
                continue
            execute("BEGIN")
            for row in mtr:
                execute(INSERT, row)
            execute("COMMIT")


def sqlite_insert_many(connection: sqlite3.Connection, mtrs: Iterable[Mtr]) -> None:
    """One transaction per MTR, one ``executemany`` for its rows."""
    for mtr in mtrs:
        connection.execute("BEGIN")
        connection.executemany(INSERT, mtr)
        connection.execute("COMMIT")


def check_sqlite(
    connection: sqlite3.Connection, plan: RowPlan, rounds_done: int, tables: int = 1
) -> None:
    """Every row of every round is there once (``tables`` tables filled the same way)."""
    (count,) = connection.execute("SELECT count(*) FROM redo").fetchone()
    assert count == rounds_done * plan.rows_per_round * tables, f"{count} rows in SQLite"
    for round_number in sample_rounds(rounds_done):
        for page_no, offset, data in plan.rows(round_number):
            found = connection.execute(
                "SELECT data FROM redo WHERE page = ? AND offset = ?", (page_no, offset)
            ).fetchone()
            assert found == (data,), f"SQLite row ({page_no}, {offset}) holds the wrong bytes"


# --- threads ----------------------------------------------------------------------


def run_threads(count: int, work: Callable[[int], object]) -> None:
    """Runs ``work(0) .. work(count - 1)`` on ``count`` threads; re-raises the first failure."""
    errors: list[BaseException] = []

    def body(number: int) -> None:
        try:
            work(number)
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=body, args=(number,), name=f"committer-{number}")
        for number in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def share(items: Sequence[Mtr], count: int, number: int) -> Sequence[Mtr]:
    """Thread ``number``'s share of ``items`` when ``count`` threads split them."""
    return items[number::count]
