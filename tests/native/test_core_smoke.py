"""The compiled core is the one this code expects, and backend selection works.

Reads constants from the compiled library, checks that a core of another
format version or with other constants is refused, that
AURORA_STORAGE_BACKEND selects a backend (and an unknown name raises
NativeCoreError), and that errors raised on memoryview inputs can be garbage
collected without crashing the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from types import SimpleNamespace

import pytest

from aurora_storage import native
from aurora_storage.errors import FormatVersionError, NativeCoreError

SUBPROCESS_TIMEOUT_SECONDS = 120


def run_python(code: str, backend_name: str | None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.pop("AURORA_STORAGE_BACKEND", None)
    if backend_name is not None:
        environment["AURORA_STORAGE_BACKEND"] = backend_name
    # Run outside the checkout: "-c" puts the working folder first on sys.path, and the
    # source tree there has no compiled core unless it was installed in place.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )


def test_compiled_library_reports_the_format_version() -> None:
    core = native.get_backend("native")
    assert core.lib.aus_format_version() == native.FORMAT_VERSION  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUS_FORMAT_VERSION", native.FORMAT_VERSION),
        ("AUS_RECORD_HEADER_SIZE", native.RECORD_HEADER_SIZE),
        ("AUS_SUMMARY_SIZE", native.SUMMARY_SIZE),
        ("AUS_RECORD_ALIGN", native.RECORD_ALIGN),
        ("AUS_PAGE_SIZE_MIN", native.PAGE_SIZE_MIN),
        ("AUS_PAGE_SIZE_MAX", native.PAGE_SIZE_MAX),
        ("AUS_KIND_WRITE", native.KIND_WRITE),
        ("AUS_KIND_PAGE", native.KIND_PAGE),
        ("AUS_KIND_ZERO", native.KIND_ZERO),
        ("AUS_FLAG_CPL", native.FLAG_CPL),
        ("AUS_NO_BACKLINK", native.NO_BACKLINK),
        ("AUS_OK", native.STATUS_OK),
        ("AUS_E_TRUNCATED", native.STATUS_TRUNCATED),
        ("AUS_E_KIND", native.STATUS_KIND),
        ("AUS_E_RANGE", native.STATUS_RANGE),
        ("AUS_E_LSN_ORDER", native.STATUS_LSN_ORDER),
        ("AUS_E_RESERVED", native.STATUS_RESERVED),
        ("AUS_E_LENGTH", native.STATUS_LENGTH),
        ("AUS_E_PAGE", native.STATUS_PAGE),
        ("AUS_E_BACKLINK", native.STATUS_BACKLINK),
        ("AUS_E_EMPTY", native.STATUS_EMPTY),
        ("AUS_E_PADDING", native.STATUS_PADDING),
        ("AUS_E_CAPACITY", native.STATUS_CAPACITY),
        ("AUS_E_ARGUMENT", native.STATUS_ARGUMENT),
    ],
)
def test_compiled_constant_matches_python(name: str, value: int) -> None:
    assert getattr(native.get_backend("native").lib, name) == value  # type: ignore[attr-defined]


def fake_core(format_version: int, **constants: int) -> SimpleNamespace:
    """A stand-in for the compiled module: the real core's constants, some overridden."""
    real = native.get_backend("native").lib  # type: ignore[attr-defined]
    values = {name: getattr(real, name) for name in dir(real) if name.startswith("AUS_")}
    values.update(constants)

    def not_called(*arguments: object) -> int:
        raise AssertionError("the fake core runs no batch")

    # NativeBackend binds its per-batch entry points when it loads.
    library = SimpleNamespace(
        aus_format_version=lambda: format_version,
        aus_apply=not_called,
        aus_apply_verified=not_called,
        **values,
    )
    return SimpleNamespace(ffi=native.get_backend("native").ffi, lib=library)  # type: ignore[attr-defined]


def test_a_core_of_another_format_version_is_refused() -> None:
    with pytest.raises(FormatVersionError) as raised:
        native.NativeBackend(fake_core(native.FORMAT_VERSION + 1))
    assert (raised.value.found, raised.value.expected) == (
        native.FORMAT_VERSION + 1,
        native.FORMAT_VERSION,
    )


def test_a_core_with_another_record_layout_is_refused() -> None:
    with pytest.raises(NativeCoreError, match="AUS_RECORD_HEADER_SIZE"):
        native.NativeBackend(fake_core(native.FORMAT_VERSION, AUS_RECORD_HEADER_SIZE=56))


def test_a_core_matching_the_python_side_loads() -> None:
    assert native.NativeBackend(fake_core(native.FORMAT_VERSION)).name == "native"


PRINT_BACKEND = """
    from aurora_storage import native
    print(native.backend.name, type(native.backend).__name__)
"""


def test_environment_variable_selects_the_python_backend() -> None:
    result = run_python(PRINT_BACKEND, "python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "PythonBackend"]


@pytest.mark.parametrize("backend_name", [None, "native"])
def test_native_backend_is_the_default(backend_name: str | None) -> None:
    result = run_python(PRINT_BACKEND, backend_name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["native", "NativeBackend"]


@pytest.mark.parametrize("backend_name", ["c", "Python", ""])
def test_unknown_backend_name_raises_native_core_error_at_import(backend_name: str) -> None:
    result = run_python(
        """
        # The package imports native itself, so the error may come from any import of it.
        try:
            from aurora_storage import native
        except Exception as error:
            print(type(error).__module__, type(error).__name__, error)
        else:
            print("imported with backend", native.backend.name)
        """,
        backend_name,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("aurora_storage.errors NativeCoreError "), result.stdout
    assert "AURORA_STORAGE_BACKEND" in result.stdout


def test_get_backend_of_an_unknown_name_raises_native_core_error() -> None:
    with pytest.raises(NativeCoreError):
        native.get_backend("fortran")


def test_get_backend_returns_each_backend_by_name() -> None:
    assert [native.get_backend(name).name for name in native.BACKEND_NAMES] == ["native", "python"]


def test_errors_on_memoryview_inputs_are_collected_without_a_crash() -> None:
    """Regression: an error kept in a reference cycle must not keep its input exported to cffi.

    CPython before 3.12.7 crashes when the garbage collector breaks a cycle
    holding an exported memoryview (gh-77894); on later versions this passes anyway.
    """
    result = run_python(
        """
        import gc
        from array import array
        from aurora_storage import native
        from aurora_storage.errors import InvalidRecordError

        core = native.get_backend("native")
        calls = [
            lambda view: core.validate(view, 4096, 0, 10, native.NO_BACKLINK),
            lambda view: core.index(view, 4096),
            lambda view: core.apply(view, 4096, array("Q"), bytearray(), None, 9, array("Q")),
            lambda view: core.apply(
                b"", 4096, array("Q", [0]), view, None, 9, array("Q")
            ),
        ]
        for call in calls:
            for _ in range(50):
                view = memoryview(bytearray(4200))[8:4104]
                try:
                    call(view)
                except InvalidRecordError as error:
                    error.cycle = error
                else:
                    raise AssertionError("the call should have failed")
                del view
                gc.collect()
        print("collected")
        """,
        "native",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "collected"
