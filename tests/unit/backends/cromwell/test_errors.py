"""HTTP and Cromwell errors as pman's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from pman.errors import BackendError, BackendUnavailable, InvalidJobSpec, JobNotFound
from tests.unit.backends.cromwell.fakes import NONE, URL, FakeSession, backend, spec


@pytest.mark.parametrize(
    ("status", "body", "error", "fields"),
    [
        (
            400,
            {"status": "fail", "message": "Invalid label: org.chrisproject.pman.auid: too long"},
            InvalidJobSpec,
            {"auid"},
        ),
        (
            400,
            {"status": "fail", "message": "Required workflow input 'pman.memory' not specified"},
            InvalidJobSpec,
            {"memory_limit"},
        ),
        (404, {"status": "fail", "message": "Unrecognized workflow ID"}, JobNotFound, set()),
        (503, {"status": "fail", "message": "shutting down"}, BackendUnavailable, set()),
        (500, {"status": "error", "message": "boom"}, BackendError, set()),
        (200, b"not json", BackendError, set()),
    ],
)
def test_error_conversion(
    tmp_path: Path, status: int, body: Any, error: type[Exception], fields: set[str]
) -> None:
    s = FakeSession(("GET", "/query", 200, NONE), ("POST", "/api/workflows/v1", status, body))
    with pytest.raises(error) as e:
        backend(tmp_path, s).submit(spec(tmp_path))
    if status >= 500:
        assert not isinstance(e.value, BackendUnavailable) or status == 503
    assert set(getattr(e.value, "fields", {})) == fields
    assert "cromwell.example:8000" in str(e.value)


@pytest.mark.parametrize("exc", [requests.ConnectionError("refused"), requests.Timeout("slow")])
def test_unreachable_is_unavailable(tmp_path: Path, exc: Exception) -> None:
    s = FakeSession(("GET", "/engine/v1/version", 0, exc))
    with pytest.raises(BackendUnavailable) as e:
        backend(tmp_path, s).ping()
    assert URL in str(e.value)
