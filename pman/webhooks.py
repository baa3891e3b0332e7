"""Webhooks: every state transition of a job, POSTed and signed.

Targets: the job's own ``callback_url`` (a field of its POST) and the global
hook ``PMAN_WEBHOOK_URL``. The registry writes one delivery per transition and
target into its outbox (``webhook_deliveries``) in the transition's own
transaction; the :class:`Deliverer`, a thread of the tracker's leader (one
sender per registry), sends them. A delivery is done when the receiver answers
2xx; anything else, a time-out or a connection error is tried again with
exponential backoff and jitter, up to ``PMAN_WEBHOOK_MAX_ATTEMPTS``, and then
marked failed and logged. Delivery is at least once: a receiver may see a
delivery twice (same ``X-Pman-Event-Id``) when pman stops between sending and
recording it.

Each body is signed: ``X-Pman-Signature: sha256=HEX`` where HEX is the
HMAC-SHA256, keyed with ``PMAN_WEBHOOK_SECRET``, of ``"<timestamp>." + body``,
and ``X-Pman-Timestamp`` is that timestamp (Unix seconds, the time of the
attempt). :func:`verify` is what a receiver does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pman import __version__
from pman.models import V1_STATUS, JobState

if TYPE_CHECKING:
    import requests

    from pman.registry import Delivery, Registry
    from pman.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pman-Signature"
TIMESTAMP_HEADER = "X-Pman-Timestamp"
EVENT_ID_HEADER = "X-Pman-Event-Id"
#: how far a receiver should let X-Pman-Timestamp be from its clock (replays)
DEFAULT_TOLERANCE_S = 300
#: deliveries sent at once (to different receivers or jobs)
PARALLEL = 4
#: how often the deliverer looks at the outbox when nothing woke it
IDLE_POLL_S = 0.5


# ---------------------------------------------------------------- signing
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Pman-Signature value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent
    (an old, replayed delivery is refused; de-duplicate by X-Pman-Event-Id)."""
    if not timestamp or not signature:
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


# ---------------------------------------------------------------- bodies
def event_id(instance: str, delivery: Delivery) -> str:
    """Unique per transition (the same for its every target and every retry)."""
    return f"{instance}-{delivery.event_id}"


def json_body(delivery: Delivery, instance: str) -> dict[str, Any]:
    p = delivery.payload
    return {
        "jid": p["jid"],
        "status": V1_STATUS[JobState(p["state"])],
        "state": p["state"],
        "message": p["message"],
        "exit_code": p["exit_code"],
        "at": p["at"],
        "event_id": event_id(instance, delivery),
    }


def slack_body(delivery: Delivery, instance: str) -> dict[str, Any]:
    """A Slack incoming-webhook message: one readable line."""
    b = json_body(delivery, instance)
    detail = b["state"] if b["exit_code"] is None else f"{b['state']}, exit code {b['exit_code']}"
    line = f"pman: job `{b['jid']}` is {b['status']} ({detail})"
    if b["message"]:
        line += f": {b['message']}"
    return {"text": line}


def backoff(
    attempts: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after ``attempts`` failed attempts: base * 2^(attempts-1),
    at most ``cap``, times a random factor in [0.5, 1) so that receivers coming
    back are not hit by every retry at once."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * (0.5 + rng() / 2)


# ---------------------------------------------------------------- sending
class Deliverer:
    """Sends the outbox's deliveries while ``leading()`` says this process leads."""

    def __init__(
        self,
        registry: Registry,
        *,
        secret: str,
        instance: str,
        global_format: str = "json",
        max_attempts: int = 10,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        timeout: float = 10.0,
        leading: Callable[[], bool] = lambda: True,
        session: requests.Session | None = None,
    ) -> None:
        self.registry = registry
        self.secret = secret
        self.instance = instance
        self.global_format = global_format
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.leading = leading
        #: None: a new connection per attempt (the pool's threads share no Session)
        self.session = session
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(
        cls, registry: Registry, settings: Settings, leading: Callable[[], bool]
    ) -> Deliverer | None:
        """None without PMAN_WEBHOOK_SECRET: no webhook can then be configured
        (settings and the API refuse them), so there is nothing to send."""
        if not settings.webhooks.secret:
            return None
        return cls(
            registry,
            secret=settings.webhooks.secret,
            instance=settings.registry.instance,
            global_format=settings.webhooks.format,
            max_attempts=settings.webhooks.max_attempts,
            backoff_base=settings.webhooks.backoff_base,
            backoff_cap=settings.webhooks.backoff_cap,
            timeout=settings.webhooks.timeout,
            leading=leading,
        )

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="pman-webhook")
        self._thread = threading.Thread(target=self._run, name="pman-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._thread = self._pool = None

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = 0
            if self.leading():
                try:
                    sent = self.run_once()
                except Exception:
                    log.exception("webhooks: sending deliveries failed")
            if not sent:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()

    def run_once(self, now: datetime | None = None) -> int:
        """Send every delivery that is due and is the oldest pending one of its
        job and receiver (so a receiver gets a job's transitions in order);
        returns the number of attempts made."""
        from pman.registry import now as utcnow

        t = now or utcnow()
        heads: list[Delivery] = []
        seen: set[tuple[int, str, str]] = set()
        for d in self.registry.pending_deliveries():
            key = (d.job_id, d.target, d.url)
            if key in seen:
                continue
            seen.add(key)
            # a job whose submission is in flight may yet be forgotten: wait for it
            if d.next_attempt_at <= t and not d.submitting:
                heads.append(d)
        if not heads:
            return 0
        if self._pool is None:
            for d in heads:
                self.attempt(d)
        else:
            list(self._pool.map(self.attempt, heads))
        return len(heads)

    def attempt(self, delivery: Delivery) -> bool:
        """One POST of ``delivery``; records the outcome. True when delivered."""
        fmt = self.global_format if delivery.target == "global" else "json"
        body_obj = (slack_body if fmt == "slack" else json_body)(delivery, self.instance)
        body = json.dumps(body_obj, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"pman/{__version__}",
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
            EVENT_ID_HEADER: event_id(self.instance, delivery),
        }
        error = self._post(delivery.url, body, headers)
        attempts = delivery.attempts + 1
        where = f"{delivery.target} webhook for job {delivery.payload['jid']!r}"
        if error is None:
            self.registry.delivery_attempted(delivery.id, outcome="delivered")
            log.debug("webhooks: delivered %s (%s)", where, delivery.payload["state"])
            return True
        if attempts >= self.max_attempts:
            self.registry.delivery_attempted(delivery.id, outcome="failed", error=error)
            log.error("webhooks: gave up on the %s after %d attempts: %s", where, attempts, error)
            return False
        delay = backoff(attempts, self.backoff_base, self.backoff_cap)
        self.registry.delivery_attempted(
            delivery.id,
            outcome="pending",
            error=error,
            retry_at=datetime.now(UTC) + timedelta(seconds=delay),
        )
        log.warning(
            "webhooks: %s, attempt %d of %d: %s; next in %.1f s",
            where,
            attempts,
            self.max_attempts,
            error,
            delay,
        )
        return False

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """None if the receiver took it (2xx), else what went wrong, in words.
        Redirects are not followed: a callback must not lead pman elsewhere."""
        import requests

        try:
            post = self.session.post if self.session is not None else requests.post
            resp = post(
                url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as e:
            return f"{type(e).__name__}: {e}"[:500]
        with resp:
            if 200 <= resp.status_code < 300:
                return None
            return f"HTTP {resp.status_code} {resp.reason}"[:500]
