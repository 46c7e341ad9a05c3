"""What a volume keeps in memory, measured in a process of its own (its peak RSS).

A memory volume keeps every page six times (one image per replica) and a hot
log per segment: at most 7x the data plus 64 MiB. A volume on disk keeps its
page cache and the hot logs, whatever the amount of data: at most
``cache_bytes`` plus 256 MiB, at two sizes of data, and with the pages
scattered over 128 TiB (a PG each).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MIB = 1024 * 1024

WRITER = textwrap.dedent(
    """
    import os, random, sys
    from aurora_storage import Volume

    def status(field):  # VmHWM, not getrusage: Linux carries the parent's peak across exec
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))

    def rss():
        return status("VmRSS")

    path, megabytes, cache = sys.argv[1] or None, int(sys.argv[2]), int(sys.argv[3])
    scattered = sys.argv[4] == "scattered"  # over 128 TiB, or else from page 0 on
    rewrite = sys.argv[4] == "rewrite"  # the first 1,024 pages again and again, in a window
    before = rss()
    page = 16384
    volume = Volume.create(
        path,
        page_size=page,
        durability="os" if path else None,
        cache_bytes=cache,
        capacity=128 << 40,
        backtrack_window=72 * 3600 if rewrite else 0,
    )
    pattern = os.urandom(page)
    rng = random.Random(5)
    pages = [
        rng.randrange((128 << 40) // page) if scattered else n % 1024 if rewrite else n
        for n in range(megabytes * 64)
    ]
    for first in range(0, len(pages), 16):
        with volume.transaction() as tx:
            for page_no in pages[first : first + 16]:
                tx.put_page(page_no, page_no.to_bytes(8, "little") + pattern[8:])
    for page_no in pages[:: len(pages) // 64]:
        assert volume.read_page(page_no)[:8] == page_no.to_bytes(8, "little")
    if rewrite:  # the window reaches back to the first writes
        volume.backtrack(volume.backtrack_window[0])
        assert volume.read_page(5) == bytes(page)
    peak = status("VmHWM")
    print(peak - before)
    volume.close()
    """
)


def grown_by(folder: Path, path: str, megabytes: int, cache: int, where: str = "first") -> int:
    """Bytes the peak RSS of a process grew by while it wrote ``megabytes`` of pages,
    the first pages of the volume or ``"scattered"`` over 128 TiB. It runs in
    ``folder``, so it imports the installed package, not a checkout's."""
    done = subprocess.run(
        [sys.executable, "-c", WRITER, path, str(megabytes), str(cache), where],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_a_memory_volume_keeps_its_pages_compactly(tmp_path: Path) -> None:
    grown = grown_by(tmp_path, "", 128, 256 * MIB)
    assert grown <= 7 * 128 * MIB + 64 * MIB, f"{grown / MIB:.0f} MiB for 128 MiB of data"


def test_a_memory_volume_scattered_over_128_tib_keeps_its_pages_compactly(
    tmp_path: Path,
) -> None:
    """A page in each of 3,072 PGs: every segment's bookkeeping and its first record
    batch (allocated at its size, not rounded up to a power of two) count too."""
    grown = grown_by(tmp_path, "", 48, 256 * MIB, "scattered")
    assert grown <= 7 * 48 * MIB + 64 * MIB, f"{grown / MIB:.0f} MiB for 48 MiB scattered"


@pytest.mark.parametrize("megabytes", [64, 256])
def test_a_volume_on_disk_keeps_its_cache_whatever_the_data(tmp_path: Path, megabytes: int) -> None:
    cache = 32 * MIB
    grown = grown_by(tmp_path, str(tmp_path / "volume"), megabytes, cache)
    assert grown <= cache + 256 * MIB, f"{grown / MIB:.0f} MiB for {megabytes} MiB of data"


def test_a_volume_scattered_over_128_tib_keeps_its_cache(tmp_path: Path) -> None:
    """Pages scattered over the whole address space land in a PG each: 3,072 PGs
    written once. Their segments fold and checkpoint, then sleep; memory stays
    within the cache's bound, and disk holds six copies plus a few blocks a
    segment (its checkpoint file, its index header)."""
    cache = 32 * MIB
    grown = grown_by(tmp_path, str(tmp_path / "volume"), 48, cache, "scattered")
    assert grown <= cache + 256 * MIB, f"{grown / MIB:.0f} MiB for 48 MiB scattered"
    used = sum(f.stat().st_blocks * 512 for f in (tmp_path / "volume").rglob("*") if f.is_file())
    segments = 6 * 3072
    assert used <= 6 * 48 * MIB + segments * 16 * 1024, f"{used / MIB:.0f} MiB on disk"


def test_a_volume_on_disk_keeps_its_cache_whatever_its_backtrack_window_holds(
    tmp_path: Path,
) -> None:
    """256 MiB written over the same 16 MiB of pages, every version inside a 72 h
    window: the window's versions stay on disk (history files), not in memory."""
    cache = 32 * MIB
    grown = grown_by(tmp_path, str(tmp_path / "volume"), 256, cache, "rewrite")
    assert grown <= cache + 256 * MIB, f"{grown / MIB:.0f} MiB for 256 MiB in the window"
    assert list((tmp_path / "volume").rglob("*.hist")), "the window's versions are on disk"
