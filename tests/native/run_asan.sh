#!/usr/bin/env bash
# Runs tests/native against the C core built with AddressSanitizer and
# UndefinedBehaviorSanitizer, and with its AUS_ASSERT invariants checked
# (-DAUS_DEBUG, csrc/internal.h). By hand, after changing csrc/; not part of CI.
#
# The instrumented extension is built in a temporary folder from a copy of
# csrc/ and aurora_storage/ (no venv is created and the editable install is not
# touched), then put first on PYTHONPATH. The interpreter is not instrumented,
# so libasan is preloaded; PYTHONMALLOC=malloc turns Python objects into plain
# malloc blocks, so an overrun of a bytes or bytearray passed to C is caught.
# Usage: tests/native/run_asan.sh [more pytest arguments, such as -x or -k apply]
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
libasan="$(gcc -print-file-name=libasan.so)"
if [[ "$libasan" != /* ]]; then
    echo "run_asan.sh: gcc does not know libasan.so (install libasan)" >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/report"
cp -R "$root/csrc" "$root/aurora_storage" "$work/src/"
find "$work/src" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +

echo "run_asan.sh: building the sanitized C core in $work/src"
if ! (cd "$work/src" &&
    AURORA_STORAGE_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -DAUS_DEBUG" \
        "$python" csrc/build_native.py >"$work/build.log" 2>&1); then
    cat "$work/build.log" >&2
    exit 1
fi

export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"
export LD_PRELOAD="$libasan"
# pytest captures file descriptor 2, so a report printed as the process aborts
# would be lost: the sanitizers write their reports to files, printed below.
export ASAN_OPTIONS="detect_leaks=0:log_path=$work/report/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$work/report/ubsan"
export PYTHONMALLOC=malloc

# PYTHONSAFEPATH keeps the working directory (the repository, with the plain
# build) off sys.path; check that the sanitized build is the one imported.
export PYTHONSAFEPATH=1
cd "$root"
loaded="$("$python" -c 'import aurora_storage.native._core as m; print(m.__file__)')"
if [[ "$loaded" != "$work/src/"* ]]; then
    echo "run_asan.sh: loaded $loaded instead of the sanitized build" >&2
    exit 1
fi
checked="$("$python" -c 'import aurora_storage.native._core as m; print(m.lib.aus_assertions_enabled())')"
if [[ "$checked" != 1 ]]; then
    echo "run_asan.sh: the sanitized build does not check its AUS_ASSERTs" >&2
    exit 1
fi
echo "run_asan.sh: testing with $loaded"
status=0
"$python" -m pytest tests/native "$@" || status=$?
if compgen -G "$work/report/*" >/dev/null; then
    echo "run_asan.sh: sanitizer reports:" >&2
    cat "$work"/report/* >&2
    [[ $status -ne 0 ]] || status=1
fi
echo "run_asan.sh: pytest and sanitizers exit status $status"
exit "$status"
