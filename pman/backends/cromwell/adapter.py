"""The cromwell backend: pman's calls wired to a Cromwell server's (the
client), its workflow (the WDL document and its inputs), the state tables and
the job's log files."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests

from pman.backends.base import Backend
from pman.backends.cromwell.client import CromwellClient
from pman.backends.cromwell.config import ENGINE, CromwellConfig
from pman.backends.cromwell.logs import follow_files, log_files, tail_text
from pman.backends.cromwell.state import (
    ACTIVE_STATUSES,
    WORKFLOW_STATES,
    info_from_metadata,
    info_from_query,
)
from pman.backends.cromwell.workflow import submit_form, unsettable_env
from pman.errors import JobExists, JobNotFound, UnsupportedOption
from pman.labels import LABEL_JID, LABEL_MANAGED
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)


class CromwellBackend(Backend):
    name = "cromwell"
    engine = ENGINE
    # the jid is a Cromwell label value (at most 255 characters) and a query
    # parameter "key:value": no ':' and nothing a URL or a shell would mangle
    name_pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
    name_rule = (
        "1 to 255 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )

    def __init__(self, config: CromwellConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.client = CromwellClient(config, session)
        #: workflow id of each jid, learned from queries: then a job's status
        #: or logs take one call, not a query first (checked against the
        #: workflow's labels, as a deleted job's jid may be taken again)
        self._ids: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> CromwellBackend:
        return cls(CromwellConfig.from_settings(settings))

    def describe(self) -> str:
        return self.config.where

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- submit
    def check(self, spec: JobSpec) -> None:
        """What Cromwell would take but pman cannot pass on faithfully."""
        bad_env = unsettable_env(spec.env)
        if bad_env:
            raise UnsupportedOption(
                f"the cromwell backend sets the environment with the shell: "
                f"{', '.join(map(repr, bad_env))} cannot be shell variable names",
                fields={"env": "names must be letters, digits and '_', not starting with a digit"},
            )

    def submit_form(self, spec: JobSpec) -> dict[str, tuple[str | None, str, str]]:
        """The multipart form of ``POST /api/workflows/v1`` for ``spec``."""
        return submit_form(spec, self.config.storebase, self.config.timelimit_minutes)

    def submit(self, spec: JobSpec) -> JobInfo:
        # Cromwell would accept a second workflow with the same label: a jid
        # on Cromwell already is pman's own job from before a lost registry,
        # or a name clash (the service compares fingerprints)
        self.check(spec)
        existing = self._find(spec.name)
        if existing is not None:
            info = info_from_query(existing)
            raise JobExists(f"a Cromwell workflow has the jid {spec.name!r}", existing=info)
        workflow_id, status = self.client.submit(self.submit_form(spec), spec.name)
        return JobInfo(
            name=spec.name,
            state=WORKFLOW_STATES.get(status, JobState.QUEUED),
            image=spec.image,
            command=spec.command,
            message=f"submitted to Cromwell as workflow {workflow_id}",
            created_at=datetime.now(UTC),
            fingerprint=spec.fingerprint,
            native_id=workflow_id,
            labels=spec.labels,
        )

    # ---------------------------------------------------------------- state
    def _query(self, criteria: Iterable[tuple[str, str]], doing: str) -> list[dict[str, Any]]:
        results = self.client.query(criteria, doing)
        for r in sorted(results, key=lambda r: str(r.get("submission") or "")):
            jid = (r.get("labels") or {}).get(LABEL_JID)
            if jid and r.get("id"):
                self._ids[str(jid)] = str(r["id"])
        return results

    def _find(self, name: str) -> dict[str, Any] | None:
        """The newest live (not deleted) workflow of job ``name``, from one query."""
        results = self._query(
            [("label", f"{LABEL_MANAGED}:true"), ("label", f"{LABEL_JID}:{name}")],
            f"looking for job {name!r}",
        )
        # the label filter matches a value exactly; insist anyway
        results = [r for r in results if (r.get("labels") or {}).get(LABEL_JID, name) == name]
        if not results:
            return None
        if len(results) > 1:
            log.warning("%d Cromwell workflows carry jid %r: using the newest", len(results), name)
        return max(results, key=lambda r: str(r.get("submission") or ""))

    def _found(self, name: str) -> dict[str, Any]:
        found = self._find(name)
        if found is None:
            raise JobNotFound(f"no job named {name!r} on the {self.describe()}")
        return found

    def get(self, name: str) -> JobInfo:
        metadata = None
        known = self._ids.get(name)
        if known is not None:
            with contextlib.suppress(JobNotFound):
                metadata = self.client.metadata(known, name)
            labels = (metadata or {}).get("labels") or {}
            if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_JID) != name:
                metadata = None
                self._ids.pop(name, None)
        if metadata is None:
            metadata = self.client.metadata(self._found(name)["id"], name)
        with self.client.errors.doing(f"reading the metadata of job {name!r}"):
            return info_from_metadata(metadata)

    # ---------------------------------------------------------------- logs
    def _log_files(self, name: str) -> list[tuple[str, str, str]]:
        workflow_id = self._ids.get(name) or self._found(name)["id"]
        return log_files(self.client.logs(workflow_id, name))

    def _log_sources(self, name: str) -> list[tuple[str, str]]:
        """(prefix, path) of every stdout and stderr file of the job's tasks, in
        the order ``logs`` gives them."""
        return [(prefix, path) for prefix, _, path in self._log_files(name)]

    def logs(self, name: str, tail: int) -> str:
        return tail_text(self._log_files(name), tail)

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The tasks' stdout and stderr files, in chunks of whole lines (each
        worker's prefixed as in ``logs``). Following, every file is read again
        once a second, the workflow is asked whether it has ended, and only
        whole lines are sent so that files never interleave mid-line."""
        if since is not None:
            raise UnsupportedOption(
                "the cromwell backend cannot filter logs by time: the tasks' stdout "
                "and stderr files have no timestamps",
                fields={"since": "not supported by the cromwell backend"},
            )
        sources = self._log_sources(name)

        def ended() -> bool:
            try:
                return self.get(name).state.finished
            except JobNotFound:
                return True

        return follow_files(
            sources,
            tail,
            (lambda: self._log_sources(name)) if follow else None,
            ended if follow else None,
        )

    # ---------------------------------------------------------------- stop
    def cancel(self, name: str) -> None:
        """Abort the workflow (Cromwell stops its task and keeps the workflow,
        its metadata and its files); one that has ended is left alone."""
        found = self._found(name)
        if found.get("status") not in ACTIVE_STATUSES:
            return
        self.client.abort(found["id"], name)

    def delete(self, name: str) -> None:
        """Abort the workflow if it runs, then unlabel it as pman's (Cromwell
        keeps every workflow): deleting twice, or a finished job, is no error."""
        found = self._find(name)
        self._ids.pop(name, None)
        if found is None:
            return
        workflow_id = found["id"]
        if found.get("status") in ACTIVE_STATUSES:
            try:
                self.client.abort(workflow_id, name)
            except JobNotFound:
                return
        self.client.label(workflow_id, {LABEL_MANAGED: "deleted"}, f"marking job {name!r} deleted")

    # ---------------------------------------------------------------- lists
    def list(self) -> list[JobInfo]:
        """Every job pman created (not deleted) in ONE query."""
        results = self._query([("label", f"{LABEL_MANAGED}:true")], "listing pman's workflows")
        return [info_from_query(r) for r in results]

    def list_active(self) -> list[JobInfo]:
        """Unfinished jobs in ONE query: Cromwell filters by status itself."""
        criteria = [("label", f"{LABEL_MANAGED}:true")]
        criteria += [("status", s) for s in ACTIVE_STATUSES]
        results = self._query(criteria, "listing pman's unfinished workflows")
        return [info_from_query(r) for r in results]

    def ping(self) -> None:
        self.client.version()
