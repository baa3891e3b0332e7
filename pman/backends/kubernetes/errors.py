"""The kubernetes client's errors as pman errors, in ONE function."""

from __future__ import annotations

import functools
import json
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from pman.backends.kit.errors import ErrorTranslator
from pman.errors import BackendError, BackendUnavailable, InvalidJobSpec, PmanError

#: words of a ``Status`` cause's field path -> the request field behind it
_CAUSE_FIELDS = (
    ("metadata.name", "jid"),
    (".env", "env"),
    (".image", "image"),
    (".command", "entrypoint"),
    (".args", "args"),
    ("[cpu]", "cpu_limit"),
    ("[memory]", "memory_limit"),
    ("gpu", "gpu_limit"),
    ("parallelism", "number_of_workers"),
    ("completions", "number_of_workers"),
)


def translate(e: Exception, doing: str, *, where: str, timeout: float) -> PmanError:
    """The pman error for ``e``, raised by the Kubernetes API ``where`` (a few
    words naming it and its address) while ``doing``; ``timeout`` is the
    seconds a call may take."""
    if isinstance(e, ApiException):
        status = status_of(e)
        text = status.get("message") or e.reason or str(e)
        if e.status == 422:
            fields = fields_of(status)
            return InvalidJobSpec(
                f"Kubernetes refused {doing}: {text}", fields=fields or {"jid": text}
            )
        if e.status in (401, 403):
            return BackendError(
                f"{where} refused pman's credentials while {doing} ({e.status} "
                f"{status.get('reason') or e.reason}): {text}. Check the kubeconfig or the "
                "ServiceAccount's Role (see kubernetes/)",
                detail=status,
            )
        if e.status in (429, 502, 503, 504) or e.status == 0:
            return BackendUnavailable(f"{where} is unavailable while {doing}: {text}")
        return BackendError(f"{where} failed {doing}: {text}", detail=status)
    if isinstance(e, urllib3.exceptions.TimeoutError):
        return BackendUnavailable(f"{where} did not answer within {timeout:g} s while {doing}")
    if isinstance(e, urllib3.exceptions.HTTPError | OSError):
        return BackendUnavailable(f"{where} is unreachable while {doing}: {e}")
    return BackendError(f"{where} failed {doing}: {e}")


def translator(where: str, timeout: float) -> ErrorTranslator:
    """:func:`translate` for one API server, as ``with errors.doing(...)`` blocks use it."""
    return ErrorTranslator(functools.partial(translate, where=where, timeout=timeout))


def status_of(e: ApiException) -> dict[str, Any]:
    """The ``Status`` object of an API error, {} if the body is not one."""
    try:
        body = json.loads(e.body or b"{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


def fields_of(status: dict[str, Any]) -> dict[str, str]:
    """The request fields a ``Status``'s causes name, with the API's words."""
    fields: dict[str, str] = {}
    for cause in (status.get("details") or {}).get("causes") or []:
        path = str(cause.get("field", ""))
        for word, field_name in _CAUSE_FIELDS:
            if word in path:
                fields.setdefault(field_name, str(cause.get("message", "")))
    return fields
