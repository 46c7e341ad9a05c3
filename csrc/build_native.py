"""cffi build script for aurora_storage.native._core (out-of-line API mode).

setup.py names it in ``cffi_modules``; it reads the real header and source
files in this folder, so the C code lives in .c/.h files, not in strings.
Extra compiler flags come from AURORA_STORAGE_CFLAGS (for example
``-fsanitize=address`` for the sanitizer run described in the README).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADERS = [
    HERE / "status.h",
    HERE / "record.h",
    HERE / "aurora.h",
    HERE / "pagelog.h",
    HERE / "writer.h",
    HERE / "flush.h",
    HERE / "chunks.h",
]

STATIC_ASSERT = re.compile(r"^_Static_assert\(.*?\);$", re.MULTILINE | re.DOTALL)


def cdef_text(header: str) -> str:
    """The header without preprocessor lines, except AUS_ integer constants, and
    without static assertions (record.h's, for the compiler alone)."""
    kept = []
    for line in STATIC_ASSERT.sub("", header).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if re.match(r"#define AUS_\w+\s+\S", stripped):
                kept.append(stripped.split("/*")[0].rstrip())
            continue
        kept.append(line)
    return "\n".join(kept)


ffibuilder = FFI()
ffibuilder.cdef("\n".join(cdef_text(header.read_text()) for header in HEADERS))

# -pthread: the flusher (flush.c) runs flushes on a thread of its own.
extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-pthread"]
extra_link_args: list[str] = ["-pthread"]
if os.environ.get("AURORA_STORAGE_CFLAGS"):
    flags = os.environ["AURORA_STORAGE_CFLAGS"].split()
    extra_compile_args += flags
    extra_link_args += flags

ffibuilder.set_source(
    "aurora_storage.native._core",
    '#include "status.h"\n#include "record.h"\n'
    '#include "aurora.h"\n#include "pagelog.h"\n#include "writer.h"\n#include "flush.h"\n'
    '#include "chunks.h"',
    # Relative to the project root, where setup.py runs the build.
    sources=[
        "csrc/aurora.c",
        "csrc/pagelog.c",
        "csrc/writer.c",
        "csrc/flush.c",
        "csrc/chunks.c",
    ],
    include_dirs=["csrc"],
    extra_compile_args=extra_compile_args,
    extra_link_args=extra_link_args,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
