"""The C core called from several threads at once: each call reports its own results.

C runs with the GIL released, so two threads (two volumes, or a restore beside
commits) can be inside the backend together; output cells shared between
them would hand one call the other's summary or count.
"""

from __future__ import annotations

import threading

from aurora_storage import native
from aurora_storage.format import frames as log

PAGE = 4096
ROUNDS = 2000


def batch(first_lsn: int, count: int, page_no: int) -> bytes:
    return b"".join(
        log.pack_record(lsn, lsn - 1, page_no, log.KIND_WRITE, b"x" * 8, 0)
        for lsn in range(first_lsn, first_lsn + count)
    )


def test_validate_and_index_in_parallel_threads_keep_their_results() -> None:
    backend = native.get_backend("native")
    work = {
        0: (batch(1, 5, 3), (5, 1, 5)),
        1: (batch(1000, 4000, 9), (4000, 1000, 4999)),
    }
    wrong: list[str] = []
    start = threading.Barrier(2)

    def run(number: int) -> None:
        try:
            check(number)
        except Exception as error:  # reported by the main thread
            wrong.append(f"thread {number}: {error!r}")

    def check(number: int) -> None:
        data, (count, first, last) = work[number]
        start.wait()
        for _ in range(ROUNDS):
            summary = backend.validate(data, PAGE, 0, 1 << 40, first - 1)
            if (summary.count, summary.first_lsn, summary.last_lsn) != (count, first, last):
                wrong.append(f"thread {number} validate: {summary}")
                return
            if len(backend.index(data, PAGE)) != count:
                wrong.append(f"thread {number} index: wrong count")
                return

    threads = [threading.Thread(target=run, args=(number,)) for number in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong
