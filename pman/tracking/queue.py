"""The tracker's part of pman's capacity queue (PMAN_MAX_RUNNING): starting a
resource's waiting jobs, oldest first, as its engine has room."""

from __future__ import annotations

import logging
import sys
import threading

from pman.errors import BackendUnavailable, JobExists, PmanError
from pman.jobs import labelled_for, spec_from_record
from pman.lifecycle import StartFailed
from pman.registry import JobRecord, Registry
from pman.tracking.lanes import CycleReport, Lane

log = logging.getLogger("pman.tracker")


class QueueStarter:
    """Starts queued jobs (a part of pman.tracker.Tracker)."""

    registry: Registry
    _stop: threading.Event

    def _start_queued(self, lane: Lane, report: CycleReport) -> None:
        """Start a resource's waiting jobs, oldest first, while fewer than its
        ``max_running`` are on its engine (counted in the registry: after this
        cycle's updates). Without a limit (PMAN_MAX_RUNNING lowered to 0 over a
        restart) every waiting job starts."""
        limit = lane.max_running if lane.max_running > 0 else sys.maxsize
        name = lane.backend.name
        while not self._stop.is_set():
            record = self.registry.claim_next(name, limit, resource=lane.name)
            if record is None:
                break
            self._submit_claimed(lane, record)  # raises BackendUnavailable, job back in place
            report.started += 1
            report.engine_calls += 1
        if lane.max_running > 0:
            self.registry.refresh_queue_messages(name, lane.max_running, resource=lane.name)

    def _submit_claimed(self, lane: Lane, record: JobRecord) -> None:
        """Submit a job taken from the queue. An engine that cannot be reached
        puts it back in its place; any other failure ends the job with the
        engine's message (never dropped, never retried for ever)."""
        jid = record.jid

        def fail(message: str) -> None:
            log.warning("tracker: could not start queued job %s: %s", jid, message)
            self.registry.report(record.id, StartFailed(message=message))

        try:
            data, labels, fingerprint = self.registry.queued_spec(record.id)
            if lane.storage is None:
                raise PmanError("this tracker was built without the storage to place it")
            spec = spec_from_record(data, labels, fingerprint, lane.storage)
            lane.storage.prepare_output(spec.mounts)
            info = lane.backend.submit(labelled_for(spec, lane.name))
        except BackendUnavailable as e:
            self.registry.unclaim(record.id, f"waiting for the engine ({e.message})")
            raise
        except JobExists as e:
            if e.existing is not None and e.existing.fingerprint == record.fingerprint:
                self.registry.record(record.id, e.existing)  # it got there before
            else:
                fail(f"the engine has a job named {jid!r} that pman did not record")
            return
        except PmanError as e:
            fail(e.message)
            return
        except Exception as e:
            log.exception("tracker: starting queued job %s", jid)
            fail(f"internal error in pman ({type(e).__name__}); the server log has the details")
            return
        self.registry.record(record.id, info)
        if not self.registry.get(record.id).active:
            # deleted while it was being submitted: it must not run unrecorded
            lane.backend.delete(jid)
        log.info("tracker: started queued job %s on %s", jid, lane.name)
