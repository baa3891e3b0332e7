"""Reconciliation: jobs pman made that an engine has and the registry does not
(a lost database, a crash between engine and registry) are adopted, each by
the compute resource it belongs to."""

from __future__ import annotations

import logging

from pman.errors import JobExists, JobNotFound
from pman.labels import LABEL_AUID, LABEL_INSTANCE, LABEL_MANAGED, LABEL_RESOURCE
from pman.registry import Registry
from pman.tracking.lanes import CycleReport, Lane

log = logging.getLogger("pman.tracker")


class Adopter:
    """Adopts unknown jobs of pman's (a part of pman.tracker.Tracker)."""

    registry: Registry
    #: this pman's PMAN_INSTANCE: jobs another pman made are not adopted
    instance: str

    def _final_logs(self, lane: Lane, jid: str) -> str:
        raise NotImplementedError

    def _reconcile(self, lane: Lane, report: CycleReport) -> None:
        """Adopt pman-labelled jobs of this resource that the registry does not know.

        A job labelled with another resource is that one's (two resources may
        share an engine); a job without the label (made before pman had
        resources) is the resource's whose engine lists it."""
        report.reconciled = True
        infos = lane.backend.list()
        report.engine_calls += 1
        known = self.registry.active_jids()
        for info in infos:
            if info.name in known or info.labels.get(LABEL_MANAGED) != "true":
                continue
            if info.labels.get(LABEL_INSTANCE, "") not in ("", self.instance):
                continue  # another pman's job on a shared engine: its own tracker follows it
            if info.labels.get(LABEL_RESOURCE, lane.name) != lane.name:
                continue  # another resource's job on a shared engine
            try:
                full = lane.backend.get(info.name)
                report.engine_calls += 1
            except JobNotFound:
                continue
            logs = None
            if full.state.finished:
                logs = self._final_logs(lane, info.name)
                report.engine_calls += 1
            try:
                self.registry.adopt(
                    full,
                    lane.backend.name,
                    info.labels.get(LABEL_AUID, ""),
                    info.labels,
                    logs,
                    resource=lane.name,
                )
            except JobExists:
                continue  # another resource on the same engine adopted it first
            log.warning(
                "tracker: adopted %s on %s, found on the engine without a record",
                info.name,
                lane.name,
            )
            report.adopted += 1
