"""The kubernetes client's errors as pman errors (errors.translate)."""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from pman.backends.kubernetes.errors import translate, translator
from pman.errors import BackendError, BackendUnavailable, InvalidJobSpec, JobNotFound

WHERE = "Kubernetes API at http://127.0.0.1:9 (namespace default)"


def fail(e: Exception, doing: str) -> NoReturn:
    raise translate(e, doing, where=WHERE, timeout=30)


def api_error(status: int, body: dict[str, Any] | None = None) -> ApiException:
    e = ApiException(status=status, reason="x")
    e.body = json.dumps(body or {}).encode()
    return e


def test_invalid_status_names_the_fields() -> None:
    status = {
        "kind": "Status",
        "code": 422,
        "message": 'Job.batch "j" is invalid: spec.template.spec.containers[0].env[0].name',
        "details": {
            "causes": [
                {
                    "field": "spec.template.spec.containers[0].env[0].name",
                    "message": "Invalid value",
                },
                {
                    "field": "spec.template.spec.containers[0].resources.limits[memory]",
                    "message": "must be less than or equal to memory limit",
                },
            ]
        },
    }
    with pytest.raises(InvalidJobSpec, match="is invalid") as e:
        fail(api_error(422, status), "creating Job 'j'")
    assert set(e.value.fields) == {"env", "memory_limit"}


def test_engine_errors_are_5xx_with_reasons() -> None:
    forbidden = {"kind": "Status", "reason": "Forbidden", "message": "jobs.batch is forbidden"}
    with pytest.raises(BackendError, match="Role") as e:
        fail(api_error(403, forbidden), "listing")
    assert not isinstance(e.value, BackendUnavailable)
    with pytest.raises(BackendUnavailable):
        fail(api_error(503), "listing")


def test_a_refusal_naming_no_known_field_names_the_jid() -> None:
    status = {"kind": "Status", "message": "Job.batch is invalid", "details": {"causes": []}}
    with pytest.raises(InvalidJobSpec, match="Kubernetes refused creating Job 'j'") as e:
        fail(api_error(422, status), "creating Job 'j'")
    assert e.value.fields == {"jid": "Job.batch is invalid"}


@pytest.mark.parametrize("code", [0, 429, 502, 503, 504])
def test_an_api_that_cannot_answer_now_is_unavailable(code: int) -> None:
    with pytest.raises(
        BackendUnavailable, match=re.escape(f"{WHERE} is unavailable while listing")
    ):
        fail(api_error(code), "listing")


@pytest.mark.parametrize("code", [400, 404, 409, 500])
def test_other_answers_are_failures_with_the_status(code: int) -> None:
    status = {"kind": "Status", "code": code, "message": "it went wrong"}
    with pytest.raises(
        BackendError, match=re.escape(f"{WHERE} failed listing: it went wrong")
    ) as e:
        fail(api_error(code, status), "listing")
    assert not isinstance(e.value, BackendUnavailable)
    assert e.value.detail == status


def test_a_body_that_is_no_status_leaves_the_reason() -> None:
    e = ApiException(status=500, reason="Internal Server Error")
    e.body = b"<html>oops</html>"
    with pytest.raises(BackendError, match="failed listing: Internal Server Error"):
        fail(e, "listing")


def test_network_errors() -> None:
    timeout = urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")
    with pytest.raises(BackendUnavailable, match="did not answer within 30 s while listing"):
        fail(timeout, "listing")
    with pytest.raises(BackendUnavailable, match="is unreachable while listing: refused"):
        fail(ConnectionRefusedError("refused"), "listing")
    with pytest.raises(BackendUnavailable, match="is unreachable"):
        fail(urllib3.exceptions.ProtocolError("broken"), "listing")
    with pytest.raises(BackendError, match="failed listing: odd"):
        fail(ValueError("odd"), "listing")


def test_the_translator_leaves_pman_errors_alone() -> None:
    errors = translator(WHERE, 30)
    with pytest.raises(JobNotFound), errors.doing("reading Job 'j'"):
        raise JobNotFound("no job named 'j'")
    with pytest.raises(BackendUnavailable) as e, errors.doing("reading Job 'j'"):
        raise api_error(503)
    assert isinstance(e.value.__cause__, ApiException)
