"""The ONE place where HTTP and Cromwell errors become pman errors."""

from __future__ import annotations

import re

import requests

from pman.backends.cromwell.workflow import INPUT_FIELDS, WORKFLOW_NAME
from pman.errors import BackendError, BackendUnavailable, InvalidJobSpec, JobNotFound, PmanError
from pman.labels import LABEL_AUID, LABEL_IMAGE, LABEL_JID

#: request fields behind pman's labels
_LABEL_FIELDS = {LABEL_JID: "jid", LABEL_IMAGE: "image", LABEL_AUID: "auid"}


def translate(e: Exception, doing: str, *, where: str, timeout: float) -> PmanError:
    """The pman error for ``e``, raised by a request to the Cromwell server
    ``where`` (its description for messages) while ``doing``; ``timeout``
    is the seconds a request may take."""
    if isinstance(e, requests.Timeout):
        return BackendUnavailable(f"{where} did not answer within {timeout:g} s while {doing}")
    if isinstance(e, requests.ConnectionError):
        return BackendUnavailable(f"{where} is unreachable while {doing}: {e}")
    if isinstance(e, requests.HTTPError) and e.response is not None:
        code = e.response.status_code
        text = error_text(e.response)
        if code == 404:
            return JobNotFound(f"{where} does not know it ({doing}): {text}")
        if code == 400:
            return InvalidJobSpec(f"{where} refused {doing}: {text}", fields=fields_named(text))
        if code == 503:
            return BackendUnavailable(f"{where} is unavailable while {doing}: {text}")
        return BackendError(f"{where} failed {doing}: HTTP {code}: {text}", detail=text)
    if isinstance(e, ValueError | KeyError | TypeError):
        # a body that is not the JSON Cromwell documents
        return BackendError(f"{where} answered {doing} with something unexpected: {e}")
    return BackendError(f"{where} failed {doing}: {e}")


def http_status(e: BackendError) -> int | None:
    """The HTTP status of the answer behind ``e``, if an answer caused it."""
    cause = e.__cause__
    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        return cause.response.status_code
    return None


def error_text(resp: requests.Response) -> str:
    """Cromwell's error body ``{"status": "fail", "message": ..., "errors": [...]}``."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason
    if not isinstance(body, dict):
        return str(body)[:500]
    message = str(body.get("message") or resp.reason)
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        message += ": " + "; ".join(str(x) for x in errors)
    return message


def fields_named(text: str) -> dict[str, str]:
    """The request fields a Cromwell 400 names: a workflow input or a label."""
    fields: dict[str, str] = {}
    for name, field in INPUT_FIELDS.items():
        if re.search(rf"\b{WORKFLOW_NAME}\.{name}\b", text):
            fields[field] = text
    for label, field in _LABEL_FIELDS.items():
        if label in text:
            fields[field] = text
    return fields
