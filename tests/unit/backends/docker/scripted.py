"""An Engine API client answered from a script, for the adapters' unit tests
(docker, podman and swarm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker.errors
import requests


def api_error(cls: type[docker.errors.APIError], status: int, text: str = "") -> Exception:
    """An error of the docker SDK as the engine's answer ``status`` makes it."""
    response = requests.Response()
    response.status_code = status
    return cls(str(status), response=response, explanation=text or f"status {status}")


class ScriptedAPI:
    """Any APIClient method: ``answers[method]`` is a list of results or
    exceptions taken in turn; once it is used up, ``defaults[method]`` (called
    with the call's arguments) or None. Every call's method is recorded."""

    api_version = "1.41"

    def __init__(
        self, defaults: dict[str, Callable[..., Any]] | None = None, **answers: list[Any]
    ) -> None:
        self.defaults = defaults or {}
        self.answers = answers
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append(method)
            queue = self.answers.get(method)
            if queue:
                answer = queue.pop(0)
            elif method in self.defaults:
                answer = self.defaults[method](*args, **kw)
            else:
                answer = None
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call
