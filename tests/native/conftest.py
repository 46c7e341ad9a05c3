"""Shared fixture of the native tests: every test taking ``backend`` runs on both backends.

The fixture also installs the chosen backend as ``native.backend``, so the
module-level wrappers (``native.validate/index/apply``) and ``log.decode_frame``
run on it too.
"""

from __future__ import annotations

import pytest

from aurora_storage import native


@pytest.fixture(params=native.BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> native.Backend:
    selected = native.get_backend(request.param)
    monkeypatch.setattr(native, "backend", selected)
    return selected
