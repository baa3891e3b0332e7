"""A webhook receiver the tests run on 127.0.0.1 (port 0): it records every
POST and answers with the statuses it is told, then 200."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pman.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers[EVENT_ID_HEADER]

    def verified(self, secret: str) -> bool:
        h = self.headers
        return verify(secret, h.get(TIMESTAMP_HEADER), h.get(SIGNATURE_HEADER), self.body)


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        #: statuses to answer, in order, before answering 200
        self.failures: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k: v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.failures.pop(0) if receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, predicate: Any, timeout: float = 60) -> list[Received]:
        """The deliveries to ``path`` once ``predicate(them)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.at(path)
            if predicate(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"deliveries to {path} never satisfied the test: {got}")
            time.sleep(0.05)


def delivered_states(received: list[Received]) -> list[str]:
    """The states of the distinct transitions received, in the order first seen."""
    seen: dict[str, str] = {}
    for r in received:
        body = r.json
        seen.setdefault(r.event_id, body.get("state") or body.get("text", ""))
    return list(seen.values())
