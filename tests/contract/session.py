"""Sending the contract's requests and recording the answers, by name."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import requests

from tests.contract import server
from tests.contract.normalise import Placeholders, response_record
from tests.webhook_receiver import Receiver

#: the longest any wait for a job's state takes before the scenario fails
DEADLINE_S = 120
FINISHED = ("finishedSuccessfully", "finishedWithError")


class Session:
    """Requests to one served pman; ``exchanges`` is what is recorded, by name,
    in the order sent."""

    def __init__(self, served: server.Served, receiver: Receiver) -> None:
        self.url = served.url
        self.storebase = served.storebase
        self.receiver = receiver
        self.ph = Placeholders(served.url, str(served.workdir))
        self.ph.subs.append((receiver.url, "<receiver>"))
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.jwt = ""
        self.jids: list[str] = []
        self.cursors: set[str] = set()

    # ------------------------------------------------------------ sending
    def send(
        self,
        name: str,
        method: str,
        path: str,
        *,
        auth: str = "token",
        query: list[tuple[str, str]] | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        body: str = "full",
    ) -> requests.Response:
        """Send one request and record it and its answer under ``name``.
        ``auth``: "token", "jwt" (the login's), "none", or a header's whole value."""
        assert name not in self.exchanges, f"two exchanges named {name!r}"
        sent = dict(headers or {})
        shown = dict(sent)
        if auth == "token":
            sent["Authorization"] = f"Bearer {server.TOKEN}"
            shown["Authorization"] = "Bearer <token>"
        elif auth == "jwt":
            sent["Authorization"] = f"Bearer {self.jwt}"
            shown["Authorization"] = "Bearer <jwt>"
        elif auth != "none":
            sent["Authorization"] = shown["Authorization"] = auth
            if self.jwt and self.jwt[:20] in auth:
                shown["Authorization"] = "Bearer <jwt, altered>"
        target = path + ("?" + urlencode(query) if query else "")
        # a cursor the server gave is made afresh by every run
        shown_query = [(k, "<cursor>" if v in self.cursors else v) for k, v in query or []]
        request: dict[str, Any] = {
            "method": method,
            "path": path + ("?" + urlencode(shown_query, safe="<>") if query else ""),
        }
        if shown:
            request["headers"] = shown
        if json is not None:
            request["json"] = self.ph.json(json)
        if isinstance(data, (str, bytes)):
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            request["data"] = text if len(text) <= 200 else f"<{len(text)} characters>"
        elif data is not None:
            request["data"] = "<chunked, no Content-Length>"
        resp = requests.request(
            method,
            self.url + target,
            headers=sent,
            json=json,
            data=data,
            timeout=60,
            allow_redirects=False,
        )
        self.exchanges[name] = {
            "request": request,
            "response": response_record(resp, self.ph, body, sent.get("X-Request-ID")),
        }
        return resp

    def get(self, path: str) -> requests.Response:
        """A request that is not recorded (a wait's poll)."""
        headers = {"Authorization": f"Bearer {server.TOKEN}"}
        return requests.get(self.url + path, headers=headers, timeout=60)

    def submit(self, name: str, body: dict[str, Any], **kw: Any) -> requests.Response:
        self.jids.append(body["jid"].lstrip("/"))
        return self.send(name, "POST", "/api/v1/", json=body, **kw)

    # ------------------------------------------------------------ waiting
    def wait_until(self, what: str, check: Callable[[], Any]) -> Any:
        """``check()``'s first true value, polled until DEADLINE_S."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened within {DEADLINE_S} s: {what}")
            time.sleep(0.05)

    def wait_status(self, jid: str, statuses: tuple[str, ...]) -> None:
        def seen() -> bool:
            resp = self.get(f"/api/v1/{jid}/")
            assert resp.status_code == 200, resp.text
            return resp.json()["status"] in statuses

        self.wait_until(f"job {jid} is {' or '.join(statuses)}", seen)

    def release(self, jid: str) -> None:
        (self.storebase / "key-1" / "incoming" / f"go-{jid}").write_text("go\n")

    def cleanup(self) -> None:
        """Let every gated job end and delete every job (after a failure too)."""
        for jid in self.jids:
            with contextlib.suppress(OSError):
                self.release(jid)
        for jid in self.jids:
            with contextlib.suppress(requests.RequestException):
                headers = {"Authorization": f"Bearer {server.TOKEN}"}
                requests.delete(f"{self.url}/api/v1/{jid}/", headers=headers, timeout=60)

    # ------------------------------------------------------------ the scenario
