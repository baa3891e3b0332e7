"""A small client of pman's v1 HTTP API, for ``pman submit|status|logs|...``.

It needs only ``requests`` and the standard library (never Flask nor
``pman.app``), so it runs where pman's server dependencies are absent. Every
failure is a :class:`ClientError` carrying the server's own ``message``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:5010"
FINISHED = ("finishedSuccessfully", "finishedWithError")
#: the label pman puts on every job it records, naming its jid
LABEL_JID = "org.chrisproject.pman.jid"


class ClientError(Exception):
    """A request failed; ``message`` says why (the server's words when it gave some)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BadRequest(ClientError):
    """400: the request was refused, ``fields`` name what is wrong."""

    def __init__(self, message: str, status: int | None = 400, fields: dict | None = None) -> None:
        super().__init__(message, status)
        self.fields = fields or {}


class Unauthorized(ClientError):
    """401 or 403: no, or wrong, credentials."""


class NotFound(ClientError):
    """404: no such job."""


class Conflict(ClientError):
    """409: the jid is taken by a different request."""


class Unavailable(ClientError):
    """pman cannot be reached, or it (or its engine) failed: 5xx."""


class NotSupported(ClientError):
    """This pman has no such endpoint (an older server, or upstream pman)."""


_BY_STATUS: dict[int, type[ClientError]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
}


class PmanClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "pman-cli"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # ---------------------------------------------------------------- plumbing
    def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        read_timeout: float | None = -1,
        **kwargs: Any,
    ) -> requests.Response:
        timeout = (self.timeout, self.timeout if read_timeout == -1 else read_timeout)
        try:
            resp = self.session.request(
                method, self.url + path, timeout=timeout, stream=stream, **kwargs
            )
        except requests.ConnectionError as e:
            raise Unavailable(f"cannot reach pman at {self.url}: {_reason(e)}") from e
        except requests.Timeout as e:
            raise Unavailable(f"pman at {self.url} did not answer in {self.timeout:g} s") from e
        except requests.RequestException as e:
            raise Unavailable(f"request to pman at {self.url} failed: {e}") from e
        if resp.status_code in ok:
            return resp
        raise _error(resp)

    @staticmethod
    def _jid(jid: str) -> str:
        return quote(jid.lstrip("/"), safe="")

    # ---------------------------------------------------------------- calls
    def info(self) -> dict[str, Any]:
        return self._request("GET", "/api/v1/").json()

    def submit(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The job, and whether it is new (False: the same request was sent before)."""
        resp = self._request("POST", "/api/v1/", json=body, ok=(200, 201))
        return resp.json(), resp.status_code == 201

    def status(self, jid: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/{self._jid(jid)}/").json()

    def summary(self, jid: str) -> dict[str, Any] | None:
        """The registry's summary of the job (with its exit code), or None when
        the server cannot list jobs by label (upstream pman)."""
        try:
            resp = self._request(
                "GET", "/api/v1/jobs/", params={"label": f"{LABEL_JID}={jid}", "limit": 1}
            )
        except (NotFound, BadRequest):
            return None
        jobs = resp.json().get("jobs") or []
        return jobs[0] if jobs else None

    def jobs(
        self,
        status: list[str] | None = None,
        auid: str | None = None,
        limit: int = 50,
        compute_resource: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Jobs newest first, at most ``limit``, following the pages."""
        params: dict[str, Any] = {"limit": min(limit, 500)}
        if status:
            params["status"] = status
        if auid:
            params["auid"] = auid
        if compute_resource:
            params["compute_resource"] = compute_resource
        given = 0
        while given < limit:
            page = self._request("GET", "/api/v1/jobs/", params=params).json()
            for job in page["jobs"]:
                if given >= limit:
                    return
                given += 1
                yield job
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def resources(self) -> list[dict[str, Any]]:
        """The compute resources (GET /api/v1/resources/), in the server's order."""
        return list(self._request("GET", "/api/v1/resources/").json()["resources"])

    def delete(self, jid: str) -> None:
        self._request("DELETE", f"/api/v1/{self._jid(jid)}/", ok=(200, 202, 204))

    def cancel(self, jid: str) -> dict[str, Any] | None:
        """Stop the job, keeping its record; its body when the server gives one."""
        try:
            resp = self._request("POST", f"/api/v1/{self._jid(jid)}/cancel/", ok=(200, 202, 204))
        except ClientError as e:
            if e.status in (404, 405):
                self.status(jid)  # NotFound if the job is unknown
                raise NotSupported(
                    "this pman has no cancel endpoint (POST /api/v1/<jid>/cancel/); "
                    "`pman delete` stops and removes a job"
                ) from e
            raise
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def logs(self, jid: str, tail: int | None = None) -> str:
        """The job's logs (the last ``tail`` lines). A server without the logs
        endpoint: the logs of the job's status body (its last JOB_LOGS_TAIL lines)."""
        params = {"tail": tail} if tail is not None else {}
        try:
            resp = self._request("GET", f"/api/v1/{self._jid(jid)}/logs/", params=params)
        except NotFound:
            text = self.status(jid)["logs"]  # NotFound if the job is unknown
            return _tail(text, tail)
        return resp.text

    def follow_logs(
        self, jid: str, tail: int | None = None, interval: float = 1.0
    ) -> Iterator[str]:
        """The job's logs as they come, until it ends."""
        params: dict[str, Any] = {"follow": "true"}
        if tail is not None:
            params["tail"] = tail
        try:
            resp = self._request(
                "GET",
                f"/api/v1/{self._jid(jid)}/logs/",
                params=params,
                stream=True,
                read_timeout=None,  # a quiet job sends nothing for a while
            )
        except NotFound:
            yield from self._poll_logs(jid, tail, interval)
            return
        with resp:
            try:
                yield from resp.iter_content(chunk_size=None, decode_unicode=True)
            except requests.RequestException as e:
                raise Unavailable(f"the log stream from pman broke: {_reason(e)}") from e

    def _poll_logs(self, jid: str, tail: int | None, interval: float) -> Iterator[str]:
        """Following without the logs endpoint: the status body's logs, new text as
        it appears (the body holds only the last lines, so a fast job's middle may
        be missed)."""
        shown = ""
        first = True
        while True:
            job = self.status(jid)
            text = job["logs"]
            if first:
                new = _tail(text, tail)
                first = False
            elif text.startswith(shown):
                new = text[len(shown) :]
            else:
                # the window of last lines moved on: show what was not seen yet
                overlap = _overlap(shown, text)
                new = text[overlap:]
            if new:
                yield new
            shown = text
            if job["status"] in FINISHED:
                return
            time.sleep(interval)

    def wait(
        self,
        jid: str,
        interval: float = 1.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job has finished; its last body."""
        while True:
            job = self.status(jid)
            if on_poll is not None:
                on_poll(job)
            if job["status"] in FINISHED:
                return job
            time.sleep(interval)


def _error(resp: requests.Response) -> ClientError:
    message = ""
    fields: dict[str, str] = {}
    try:
        body = resp.json()
        if isinstance(body, dict):
            message = str(body.get("message") or "")
            fields = body.get("fields") or {}
    except ValueError:
        pass
    if not message:
        message = resp.text.strip()[:200] or resp.reason or "no message"
    text = f"{resp.status_code} {resp.reason}: {message}"
    if resp.status_code == 400:
        return BadRequest(text, resp.status_code, fields)
    if resp.status_code >= 500:
        return Unavailable(text, resp.status_code)
    return _BY_STATUS.get(resp.status_code, ClientError)(text, resp.status_code)


def _reason(e: Exception) -> str:
    """The operating system's words for a connection error ('Connection refused')."""
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))
    return m.group(1).strip() if m else str(e)


def _tail(text: str, lines: int | None) -> str:
    if lines is None:
        return text
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])


def _overlap(old: str, new: str) -> int:
    """The length of the longest end of ``old`` that starts ``new``."""
    for n in range(min(len(old), len(new)), 0, -1):
        if new.startswith(old[-n:]):
            return n
    return 0
