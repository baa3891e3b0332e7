"""The fixed list of requests of the v1 contract, sent in order to a served pman.

Every endpoint of the API, with its errors: the open endpoints, the login,
credentials missing or wrong, a job's life (submitted, polled, retried,
refused as a conflict, logged, streamed, cancelled, deleted), its events and
webhook deliveries (and the webhooks themselves, as a receiver got them),
the list's filters and paging, every kind of bad field (400), unknown jobs
(404), wrong methods (405), a body too large (413), and /metrics.

Jobs run on the local backend as short shell scripts. Where what is recorded
depends on when the engine did something, the job waits for a file this
scenario creates (its *gate*): the scenario polls until the job is seen
running, records, opens the gate, polls until the job has ended, records.
No step waits for a time; every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.contract import server
from tests.contract.bad_fields import BAD_FIELDS
from tests.contract.normalise import webhook_record
from tests.contract.session import DEADLINE_S, FINISHED, Session
from tests.webhook_receiver import Receiver

#: a job that runs once the file named by its first argument is in its input folder
GATED = [
    "sh",
    "-c",
    'i=0; while [ ! -e "$2/$1" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; '
    'echo "released by $1"; cat "$2/data.txt"; echo "a note" >&2; echo ok > "$3/result.txt"',
    "gated",
]
#: a job that writes one line and runs until it is cancelled (2 minutes at most)
LONG = [
    "sh",
    "-c",
    "echo before; i=0; while [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; echo never",
    "long",
]


def job(jid: str, **overrides: Any) -> dict[str, Any]:
    """A valid v1 job request of the scenario (a gated job unless overridden)."""
    body: dict[str, Any] = {
        "jid": jid,
        "args": [f"go-{jid}"],
        "args_path_flags": [],
        "auid": "chris",
        "number_of_workers": 1,
        "cpu_limit": 1000,
        "memory_limit": 128,
        "gpu_limit": 0,
        "image": "docker.io/fnndsc/pl-contract:1.0",
        "entrypoint": GATED,
        "type": "ds",
        "env": [],
        "input_dir": "key-1/incoming",
        "output_dir": f"key-1/out-{jid}",
    }
    body.update(overrides)
    return body


class Scenario(Session):
    """The requests of the contract, in order."""

    def run(self) -> dict[str, dict[str, Any]]:
        try:
            self.open_endpoints()
            self.credentials()
            self.job_life()
            self.streamed_and_webhooks()
            self.cancel()
            self.other_jobs()
            self.listing()
            self.deletion()
            self.bad_requests()
            self.unknown_and_methods()
            self.metrics()
        finally:
            self.cleanup()
        return self.exchanges

    def open_endpoints(self) -> None:
        self.send("health", "GET", "/health", auth="none")
        self.send("openapi", "GET", "/api/v1/openapi.json", auth="none")
        self.send("docs.page", "GET", "/api/v1/docs/", auth="none")
        self.send("docs.page-without-slash", "GET", "/api/v1/docs", auth="none")
        self.send("docs.asset", "GET", "/api/v1/docs/swagger-ui.css", auth="none", body="none")
        self.send("docs.asset-unknown", "GET", "/api/v1/docs/secrets.txt", auth="none")
        self.send("docs.asset-with-token", "GET", "/api/v1/docs/index.css", body="none")

    def credentials(self) -> None:
        self.send("auth.none", "GET", "/api/v1/", auth="none")
        self.send("auth.wrong-token", "GET", "/api/v1/", auth="Bearer not-the-token")
        self.send("auth.basic", "GET", "/api/v1/", auth="Basic Y2hyaXM6Y2hyaXMxMjM0")
        self.send("auth.empty-bearer", "GET", "/api/v1/", auth="Bearer ")
        self.send("auth.metrics", "GET", "/metrics", auth="none")
        self.send("auth.list", "GET", "/api/v1/jobs/", auth="none")
        self.send("auth.submit", "POST", "/api/v1/", auth="none", json=job("contract-noauth"))
        login = {"pman_user": server.USER, "pman_password": server.PASSWORD}
        resp = self.send("login.ok", "POST", "/api/v1/auth-token/", auth="none", json=login)
        self.jwt = resp.json()["token"]
        self.send("login.jwt-works", "GET", "/api/v1/", auth="jwt")
        self.send("login.jwt-altered", "GET", "/api/v1/", auth=f"Bearer {self.jwt[:-4]}AAAA")
        wrong = {"pman_user": server.USER, "pman_password": "wrong"}
        self.send("login.wrong-password", "POST", "/api/v1/auth-token/", auth="none", json=wrong)
        unknown = {"pman_user": "mallory", "pman_password": server.PASSWORD}
        self.send("login.unknown-user", "POST", "/api/v1/auth-token/", auth="none", json=unknown)
        self.send(
            "login.missing-field",
            "POST",
            "/api/v1/auth-token/",
            auth="none",
            json={"pman_user": server.USER},
        )
        self.send(
            "login.unknown-field",
            "POST",
            "/api/v1/auth-token/",
            auth="none",
            json={**login, "remember": True},
        )
        self.send("login.not-json", "POST", "/api/v1/auth-token/", auth="none", data="user=chris")
        self.send("login.get", "GET", "/api/v1/auth-token/", auth="none")
        self.send("server-info", "GET", "/api/v1/")
        self.send("server-info.without-slash", "GET", "/api/v1")
        self.send(
            "server-info.request-id", "GET", "/api/v1/", headers={"X-Request-ID": "contract-1"}
        )
        self.send(
            "server-info.insane-request-id",
            "GET",
            "/api/v1/",
            headers={"X-Request-ID": "not a sane id!"},
        )

    def job_life(self) -> None:
        jid = "contract-run"
        body = job(jid)
        self.submit("submit.created", body)
        self.wait_status(jid, ("started",))
        self.send("poll.started", "GET", f"/api/v1/{jid}/")
        self.send("poll.started-without-token", "GET", f"/api/v1/{jid}/", auth="none")
        self.send("logs.running-silent", "GET", f"/api/v1/{jid}/logs/")
        self.send("submit.same-again", "POST", "/api/v1/", json=body)
        as_strings = {
            **body,
            "number_of_workers": "1",
            "cpu_limit": " +1000 ",
            "memory_limit": "128",
            "gpu_limit": "0",
        }
        self.send("submit.same-as-integer-strings", "POST", "/api/v1/", json=as_strings)
        self.send("submit.same-leading-slash", "POST", "/api/v1/", json={**body, "jid": "/" + jid})
        self.send("submit.conflict", "POST", "/api/v1/", json={**body, "args": ["other"]})
        self.send("submit.conflict-memory", "POST", "/api/v1/", json={**body, "memory_limit": 256})
        self.release(jid)
        self.wait_status(jid, FINISHED)
        self.send("poll.finished", "GET", f"/api/v1/{jid}/")
        self.send("poll.without-slash", "GET", f"/api/v1/{jid}")
        self.send("poll.head", "HEAD", f"/api/v1/{jid}/")
        self.send("poll.request-id", "GET", f"/api/v1/{jid}/", headers={"X-Request-ID": "c-2"})
        self.send("submit.same-after-end", "POST", "/api/v1/", json=body)
        logs = f"/api/v1/{jid}/logs/"
        self.send("logs.all", "GET", logs)
        self.send("logs.without-slash", "GET", logs.rstrip("/"))
        self.send("logs.tail-1", "GET", logs, query=[("tail", "1")])
        self.send("logs.tail-0", "GET", logs, query=[("tail", "0")])
        self.send("logs.tail-more", "GET", logs, query=[("tail", "100")])
        self.send("logs.follow-false", "GET", logs, query=[("follow", "false")])
        self.send("logs.follow-ended", "GET", logs, query=[("follow", "true")])
        self.send("logs.follow-tail", "GET", logs, query=[("follow", "1"), ("tail", "2")])
        self.send("logs.since", "GET", logs, query=[("since", "2020-01-01T00:00:00")])
        self.send("logs.since-bad", "GET", logs, query=[("since", "yesterday")])
        self.send("logs.tail-negative", "GET", logs, query=[("tail", "-1")])
        self.send("logs.tail-word", "GET", logs, query=[("tail", "all")])
        self.send("logs.follow-bad", "GET", logs, query=[("follow", "maybe")])
        self.send("events.succeeded", "GET", f"/api/v1/{jid}/events/")
        self.send("webhooks.none", "GET", f"/api/v1/{jid}/webhooks/")
        self.send("cancel.after-end", "POST", f"/api/v1/{jid}/cancel/")

    def streamed_and_webhooks(self) -> None:
        """A followed log while the job runs; the webhooks of its transitions."""
        jid = "contract-hook"
        body = job(jid, callback_url=f"{self.receiver.url}/hooks/{jid}")
        self.submit("submit.with-callback", body)
        # the request names the receiver's port, and so does its fingerprint
        query = urlencode({"label": f"org.chrisproject.pman.jid={jid}"})
        listed = self.get(f"/api/v1/jobs/?{query}").json()["jobs"]
        fingerprint = listed[0]["labels"]["org.chrisproject.pman.fingerprint"]
        self.ph.subs.append((fingerprint, "<fingerprint: the request names the receiver's port>"))
        self.wait_status(jid, ("started",))
        # the stream is opened while the job runs; whether it is served before
        # or after the job writes, its text is the job's whole log
        stream = threading.Thread(
            target=self.send,
            args=("logs.follow-running", "GET", f"/api/v1/{jid}/logs/"),
            kwargs={"query": [("follow", "true")]},
        )
        stream.start()
        self.release(jid)
        self.wait_status(jid, FINISHED)
        stream.join(DEADLINE_S)
        assert not stream.is_alive(), "the followed log did not end with its job"

        def all_delivered() -> bool:
            data = self.get(f"/api/v1/{jid}/webhooks/").json()
            events = self.get(f"/api/v1/{jid}/events/").json()["events"]
            done = [d for d in data["deliveries"] if d["state"] == "delivered"]
            return len(done) == len(data["deliveries"]) == len(events)

        self.wait_until(f"every transition of {jid} delivered", all_delivered)
        self.send("webhooks.delivered", "GET", f"/api/v1/{jid}/webhooks/")
        self.send("events.with-callback", "GET", f"/api/v1/{jid}/events/")
        got = self.receiver.at(f"/hooks/{jid}")
        self.exchanges["webhooks.received"] = {
            "request": {"webhooks of": jid},
            "response": [
                webhook_record(r.headers, r.body, r.verified(server.WEBHOOK_SECRET)) for r in got
            ],
        }
        hook = f"{self.receiver.url}/hooks/x"
        host = "http://example.org/hooks/x"
        self.send(
            "submit.callback-host-not-allowed",
            "POST",
            "/api/v1/",
            json=job("contract-hook-2", callback_url=host),
        )
        for i, url in enumerate(("ftp://127.0.0.1/x", "http://", "not a url", hook + "\n")):
            self.send(
                f"submit.callback-bad-{i}",
                "POST",
                "/api/v1/",
                json=job("contract-hook-3", callback_url=url),
            )

    def cancel(self) -> None:
        jid = "contract-cancel"
        self.submit("submit.long", job(jid, entrypoint=LONG, args=[]))
        self.wait_status(jid, ("started",))
        self.wait_until(
            f"{jid} wrote its first line",
            lambda: self.get(f"/api/v1/{jid}/logs/").text == "before\n",
        )
        self.send("cancel.running", "POST", f"/api/v1/{jid}/cancel/")
        self.send("cancel.again", "POST", f"/api/v1/{jid}/cancel/")
        self.send("cancel.without-slash", "POST", f"/api/v1/{jid}/cancel")
        self.send("poll.cancelled", "GET", f"/api/v1/{jid}/")
        self.send("logs.cancelled", "GET", f"/api/v1/{jid}/logs/")
        self.send("events.cancelled", "GET", f"/api/v1/{jid}/events/")
        self.send(
            "submit.same-after-cancel", "POST", "/api/v1/", json=job(jid, entrypoint=LONG, args=[])
        )

    def other_jobs(self) -> None:
        failing = ["sh", "-c", 'echo "failing with $1" >&2; exit 3', "failing"]
        self.submit("submit.failing", job("contract-fail", entrypoint=failing, args=["three"]))
        self.wait_status("contract-fail", FINISHED)
        self.send("poll.failed", "GET", "/api/v1/contract-fail/")
        fs = job(
            "contract-fs",
            type="fs",
            auid="other.user@example",
            entrypoint=["sh", "-c", 'echo "$GREETING|$EMPTY|"; echo "$@"', "fs"],
            args=["--in", "x", "--n", "2", "--flag"],
            args_path_flags=["--in"],
            env=["GREETING=hello world", "EMPTY="],
        )
        self.submit("submit.fs", fs)
        self.wait_status("contract-fs", FINISHED)
        self.send("poll.fs", "GET", "/api/v1/contract-fs/")
        ts = job(
            "contract-ts",
            type="ts",
            entrypoint=["sh", "-c", 'echo "$#: $*"', "ts"],
            args=[],
            input_dir="key-1/incoming/",
            output_dir="./key-1/out-ts",
        )
        self.submit("submit.ts", ts)
        self.wait_status("contract-ts", FINISHED)
        self.send("poll.ts", "GET", "/api/v1/contract-ts/")

    def listing(self) -> None:
        jobs = "/api/v1/jobs/"
        self.send("list.all", "GET", jobs)
        self.send("list.without-slash", "GET", jobs.rstrip("/"))
        self.send("list.status-v1", "GET", jobs, query=[("status", "finishedWithError")])
        self.send("list.status-state", "GET", jobs, query=[("status", "cancelled")])
        self.send(
            "list.status-repeated",
            "GET",
            jobs,
            query=[("status", "succeeded"), ("status", "failed")],
        )
        self.send("list.status-comma", "GET", jobs, query=[("status", "cancelled, failed")])
        self.send("list.status-none-match", "GET", jobs, query=[("status", "started")])
        self.send("list.status-bad", "GET", jobs, query=[("status", "done")])
        self.send("list.auid", "GET", jobs, query=[("auid", "other.user@example")])
        self.send("list.auid-none", "GET", jobs, query=[("auid", "nobody-here")])
        self.send("list.label", "GET", jobs, query=[("label", "org.chrisproject.pman.type=fs")])
        self.send(
            "list.labels",
            "GET",
            jobs,
            query=[
                ("label", "org.chrisproject.pman.type=ds"),
                ("label", "org.chrisproject.pman=true"),
            ],
        )
        self.send("list.label-bad", "GET", jobs, query=[("label", "novalue")])
        self.send("list.label-empty-key", "GET", jobs, query=[("label", "=x")])
        first = self.send("list.page-1", "GET", jobs, query=[("limit", "2")])
        cursor = first.json()["next_cursor"]
        self.cursors.add(cursor)
        second = self.send("list.page-2", "GET", jobs, query=[("limit", "2"), ("cursor", cursor)])
        cursor = second.json()["next_cursor"]
        self.cursors.add(cursor)
        self.send("list.page-3", "GET", jobs, query=[("limit", "2"), ("cursor", cursor)])
        self.send("list.limit-0", "GET", jobs, query=[("limit", "0")])
        self.send("list.limit-501", "GET", jobs, query=[("limit", "501")])
        self.send("list.limit-500", "GET", jobs, query=[("limit", "500")])
        self.send("list.limit-word", "GET", jobs, query=[("limit", "ten")])
        self.send("list.cursor-bad", "GET", jobs, query=[("cursor", "garbage")])

    def deletion(self) -> None:
        jid = "contract-run"
        self.send("delete.ok", "DELETE", f"/api/v1/{jid}/")
        self.send("delete.poll", "GET", f"/api/v1/{jid}/")
        self.send("delete.again", "DELETE", f"/api/v1/{jid}/")
        self.send("delete.logs", "GET", f"/api/v1/{jid}/logs/")
        self.send("delete.cancel", "POST", f"/api/v1/{jid}/cancel/")
        self.send("delete.events-kept", "GET", f"/api/v1/{jid}/events/")
        self.send("delete.webhooks-kept", "GET", "/api/v1/contract-hook/webhooks/")
        self.send("delete.hook", "DELETE", "/api/v1/contract-hook")
        self.send("delete.webhooks-after", "GET", "/api/v1/contract-hook/webhooks/")
        self.send(
            "list.include-deleted", "GET", "/api/v1/jobs/", query=[("include_deleted", "true")]
        )
        self.send("list.after-delete", "GET", "/api/v1/jobs/")
        # the jid is free again: the same request is a new job
        self.send("submit.after-delete", "POST", "/api/v1/", json=job(jid))
        self.wait_status(jid, FINISHED)
        self.send("poll.after-delete", "GET", f"/api/v1/{jid}/")
        self.send("delete.without-slash", "DELETE", f"/api/v1/{jid}")

    def bad_requests(self) -> None:
        """400: every kind of bad field of a job request, one at a time."""
        self.send("bad.body-not-json", "POST", "/api/v1/", data="jid=x")
        self.send(
            "bad.body-not-json-with-type",
            "POST",
            "/api/v1/",
            data="{jid",
            headers={"Content-Type": "application/json"},
        )
        self.send("bad.body-array", "POST", "/api/v1/", json=[job("contract-bad")])
        self.send("bad.body-empty-object", "POST", "/api/v1/", json={})
        self.send("bad.body-empty", "POST", "/api/v1/", data="")
        good = job("contract-bad")
        for case, change in BAD_FIELDS.items():
            # a jid of its own: should a case be taken, it conflicts with no other
            body = {**job(f"contract-bad-{case}"), **change}
            if isinstance(body["jid"], str) and body["jid"]:
                self.jids.append(body["jid"])
            self.send(f"bad.{case}", "POST", "/api/v1/", json=body)
        for field in ("jid", "image", "entrypoint", "type", "input_dir", "output_dir", "auid"):
            body = {k: v for k, v in good.items() if k != field}
            self.send(f"bad.missing-{field}", "POST", "/api/v1/", json=body)
        # an empty input_dir is STOREBASE itself: taken
        quick = {"entrypoint": ["sh", "-c", "true"], "args": []}
        self.submit("submit.input-is-storebase", job("contract-root", input_dir="", **quick))
        left_out = ("args_path_flags", "env")
        optional = {k: v for k, v in job("contract-opt").items() if k not in left_out}
        self.submit("submit.optional-fields-left-out", optional)
        self.release("contract-opt")
        self.wait_status("contract-opt", FINISHED)
        self.send("poll.optional-fields-left-out", "GET", "/api/v1/contract-opt/")
        # over PMAN_MAX_REQUEST_BYTES, with and without a Content-Length
        big = {**good, "args": ["x" * server.MAX_REQUEST_BYTES]}
        self.send("bad.too-large", "POST", "/api/v1/", json=big)
        chunks = [b'{"jid": "contract-big", "args": ["', b"y" * server.MAX_REQUEST_BYTES, b'"]}']
        self.send("bad.too-large-chunked", "POST", "/api/v1/", data=_chunks(chunks))

    def unknown_and_methods(self) -> None:
        for what, method, path in (
            ("poll", "GET", "/api/v1/no-such-job/"),
            ("delete", "DELETE", "/api/v1/no-such-job/"),
            ("cancel", "POST", "/api/v1/no-such-job/cancel/"),
            ("logs", "GET", "/api/v1/no-such-job/logs/"),
            ("events", "GET", "/api/v1/no-such-job/events/"),
            ("webhooks", "GET", "/api/v1/no-such-job/webhooks/"),
            ("poll-engine-refuses-name", "GET", "/api/v1/a%20b/"),
            ("poll-dots", "GET", "/api/v1/..%2Fetc/"),
            ("route", "GET", "/api/v2/"),
            ("route-under-job", "GET", "/api/v1/contract-fs/nothing/"),
            ("root", "GET", "/"),
        ):
            self.send(f"unknown.{what}", method, path)
        self.send("unknown.route-without-token", "GET", "/api/v2/", auth="none")
        for what, method, path in (
            ("delete-list", "DELETE", "/api/v1/jobs/"),
            ("put-job", "PUT", "/api/v1/contract-fs/"),
            ("patch-root", "PATCH", "/api/v1/"),
            ("delete-root", "DELETE", "/api/v1/"),
            ("get-cancel", "GET", "/api/v1/contract-fs/cancel/"),
            ("post-logs", "POST", "/api/v1/contract-fs/logs/"),
            ("post-events", "POST", "/api/v1/contract-fs/events/"),
            ("post-health", "POST", "/health"),
            ("post-metrics", "POST", "/metrics"),
            ("post-openapi", "POST", "/api/v1/openapi.json"),
            ("delete-docs", "DELETE", "/api/v1/docs/"),
            ("options-root", "OPTIONS", "/api/v1/"),
        ):
            self.send(f"method.{what}", method, path)
        self.send("method.post-health-without-token", "POST", "/health", auth="none")

    def metrics(self) -> None:
        self.send("metrics", "GET", "/metrics", body="families")


def _chunks(parts: list[bytes]) -> Iterator[bytes]:
    yield from parts


def run(pman: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """Serve the ``pman`` command given in ``workdir`` and run the scenario."""
    receiver = Receiver()
    try:
        with server.served_pman(pman, workdir) as served:
            return Scenario(served, receiver).run()
    finally:
        receiver.stop()
