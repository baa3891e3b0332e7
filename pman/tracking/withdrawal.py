"""Withdrawn submissions (answered 503: the engine may still make them): what
an engine made of them is deleted, then their records are forgotten."""

from __future__ import annotations

import contextlib
import logging
import time

from pman.errors import JobNotFound, PmanError
from pman.registry import JobRecord, Registry
from pman.tracking.lanes import CycleReport, Lane

log = logging.getLogger("pman.tracker")

#: how often a withdrawn submission's job is deleted from the engine again;
#: its record goes after WITHDRAW_DELETES deletes the engine answered, so that
#: a call the engine carries out late (after the first delete) is caught too
WITHDRAW_EVERY_S = 2.0
WITHDRAW_DELETES = 2


class Withdrawer:
    """Removes withdrawn submissions (a part of pman.tracker.Tracker)."""

    registry: Registry
    #: the engine's answered deletes so far, by record id
    _withdraw_deletes: dict[int, int]
    _last_withdraw: float

    def _withdraw(self, lane: Lane, records: list[JobRecord], report: CycleReport) -> None:
        """Remove from the engine what it made of submissions answered 503, then
        forget them (raises BackendUnavailable while the engine does not answer)."""
        self._last_withdraw = time.monotonic()
        for record in records:
            with contextlib.suppress(JobNotFound):
                lane.backend.delete(record.jid)
            report.engine_calls += 1
            done = self._withdraw_deletes.get(record.id, 0) + 1
            if done < WITHDRAW_DELETES:
                self._withdraw_deletes[record.id] = done
                continue
            self._withdraw_deletes.pop(record.id, None)
            self._remove_empty_output(lane, record)
            self.registry.forget(record.id)
            report.withdrawn += 1
            log.info("tracker: withdrew %s (%s)", record.jid, record.message)

    def _remove_empty_output(self, lane: Lane, record: JobRecord) -> None:
        """An engine that created a withdrawn job late may have made its output
        folder (Docker makes a missing bind source): remove it if empty."""
        if lane.storage is None:
            return
        try:
            data, _, _ = self.registry.queued_spec(record.id)
            output = lane.storage.resolve(
                data["mounts"]["input_dir"], data["mounts"]["output_dir"]
            ).output_host
        except (PmanError, KeyError, TypeError):
            return
        if output is not None:
            with contextlib.suppress(OSError):
                output.rmdir()  # only if empty: never a folder with data in it
