"""Helpers shared by unit and integration tests."""

from __future__ import annotations

import uuid
from typing import Any


def job_body(**overrides: Any) -> dict[str, Any]:
    """A valid v1 job request as pfcon sends it; override any field."""
    body: dict[str, Any] = {
        "jid": f"pman-test-{uuid.uuid4().hex[:10]}",
        "args": ["--prefix", "out-"],
        "args_path_flags": [],
        "auid": "chris",
        "number_of_workers": 1,
        "cpu_limit": 1000,
        "memory_limit": 128,
        "gpu_limit": 0,
        "image": "localhost/pman-test-plugin:latest",
        "entrypoint": ["copyplugin"],
        "type": "ds",
        "env": [],
        "input_dir": "key-1/incoming",
        "output_dir": "key-1/outgoing",
    }
    body.update(overrides)
    return body
