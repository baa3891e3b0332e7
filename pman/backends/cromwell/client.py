"""The calls pman makes to a Cromwell server's REST API
(https://cromwell.readthedocs.io/en/stable/api/RESTAPI/), each raising pman's
errors only (:func:`pman.backends.cromwell.errors.translate`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import requests

from pman.backends.cromwell.config import CromwellConfig
from pman.backends.cromwell.errors import http_status, translate
from pman.backends.kit.errors import ErrorTranslator
from pman.errors import BackendError

WORKFLOWS = "/api/workflows/v1"


class CromwellClient:
    """One Cromwell server, through one HTTP session."""

    def __init__(self, config: CromwellConfig, session: requests.Session | None = None) -> None:
        self.url = config.url
        self.timeout = config.timeout
        self.session = session or requests.Session()
        self.errors = ErrorTranslator(
            functools.partial(translate, where=config.where, timeout=config.timeout)
        )

    def close(self) -> None:
        self.session.close()

    def call(self, method: str, path: str, doing: str, **kwargs: Any) -> Any:
        """One request to Cromwell; its JSON body. Raises pman's errors only."""
        with self.errors.doing(doing):
            resp = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
            resp.raise_for_status()
            return resp.json() if resp.content else {}

    def query(self, criteria: Iterable[tuple[str, str]], doing: str) -> list[dict[str, Any]]:
        """The workflows that match ``criteria`` (``("label", "key:value")``,
        ``("status", ...)``), each with its labels."""
        params = [*criteria, ("additionalQueryResultFields", "labels")]
        answer = self.call("GET", f"{WORKFLOWS}/query", doing, params=params)
        with self.errors.doing(doing):
            results = list(answer["results"])
        return [r for r in results if isinstance(r, dict)]

    def submit(self, form: dict[str, tuple[str | None, str, str]], name: str) -> tuple[str, str]:
        """Post a workflow (the multipart ``form``); its id and status."""
        doing = f"submitting job {name!r}"
        answer = self.call("POST", WORKFLOWS, doing, files=form)
        with self.errors.doing(doing):
            return str(answer["id"]), str(answer.get("status", "Submitted"))

    def metadata(self, workflow_id: str, name: str) -> dict[str, Any]:
        return self.call(
            "GET",
            f"{WORKFLOWS}/{workflow_id}/metadata",
            f"reading the metadata of job {name!r}",
            params=[("expandSubWorkflows", "false"), ("excludeKey", "submittedFiles")],
        )

    def logs(self, workflow_id: str, name: str) -> dict[str, Any]:
        """Where the workflow's calls keep their stdout and stderr."""
        return self.call(
            "GET", f"{WORKFLOWS}/{workflow_id}/logs", f"reading the logs of job {name!r}"
        )

    def abort(self, workflow_id: str, name: str) -> None:
        """Abort a workflow; one that ended meanwhile is left alone."""
        try:
            self.call("POST", f"{WORKFLOWS}/{workflow_id}/abort", f"aborting job {name!r}")
        except BackendError as e:
            if http_status(e) != 403:  # 403: it ended meanwhile, nothing to abort
                raise

    def label(self, workflow_id: str, labels: dict[str, str], doing: str) -> None:
        """Add or change labels of a workflow."""
        self.call("PATCH", f"{WORKFLOWS}/{workflow_id}/labels", doing, json=labels)

    def version(self) -> None:
        self.call("GET", "/engine/v1/version", "answering a ping")
