"""The docker SDK's errors as pman errors: one translation, table-tested."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from pman.backends.docker.errors import start_refusal, translate, translator
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.models import JobSpec, Mounts, Resources

WHERE = "Docker engine at unix:///x.sock"


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(str(status), response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (
            requests.exceptions.ReadTimeout("slow"),
            BackendUnavailable,
            f"{WHERE} did not answer within 2.5 s while inspecting 'j'",
        ),
        (
            requests.exceptions.ConnectionError("refused"),
            BackendUnavailable,
            f"{WHERE} is unreachable while inspecting 'j': refused",
        ),
        (
            FileNotFoundError("no socket"),
            BackendUnavailable,
            f"{WHERE} is unreachable while inspecting 'j': no socket",
        ),
        (
            api_error(400, "Minimum memory limit allowed is 6MB"),
            InvalidJobSpec,
            f"{WHERE} refused inspecting 'j': Minimum memory limit allowed is 6MB",
        ),
        (
            api_error(500, "boom"),
            BackendError,
            f"{WHERE} failed inspecting 'j': boom",
        ),
        (
            api_error(503, "This node is not a swarm manager. Use ..."),
            BackendUnavailable,
            f"{WHERE} is not a swarm manager (run `docker swarm init` there, or point "
            "DOCKER_HOST at a manager) while inspecting 'j': This node is not a swarm manager. "
            "Use ...",
        ),
        (
            docker.errors.DockerException("bad TLS"),
            BackendUnavailable,
            f"{WHERE}: bad TLS",
        ),
        (ValueError("odd"), BackendError, f"{WHERE} failed inspecting 'j': odd"),
    ],
)
def test_translate(error: Exception, kind: type[PmanError], message: str) -> None:
    out = translate(error, "inspecting 'j'", where=WHERE, timeout=2.5)
    assert type(out) is kind
    assert out.message == message


def test_a_refusal_names_the_fields_the_engine_names() -> None:
    out = translate(api_error(400, "invalid memory and CPU"), "x", where=WHERE, timeout=1)
    assert isinstance(out, InvalidJobSpec)
    assert set(out.fields) == {"memory_limit", "cpu_limit"}
    failed = translate(api_error(500, "disk full"), "x", where=WHERE, timeout=1)
    assert isinstance(failed, BackendError) and failed.detail == "disk full"


def test_the_translator_passes_pman_errors_through() -> None:
    errors = translator(WHERE, 1.0)
    with pytest.raises(JobNotFound), errors.doing("x"):
        raise JobNotFound("gone")
    with pytest.raises(BackendUnavailable) as e, errors.doing("pinging"):
        raise requests.exceptions.ConnectionError("down")
    assert isinstance(e.value.__cause__, requests.exceptions.ConnectionError)


def spec(gpus: int = 0) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="img",
        command=["copyplugin", "/share/outgoing"],
        env=[],
        resources=Resources(1, 500, 4, gpus),
        mounts=Mounts("in", "out"),
        plugin_type="fs",
        auid="chris",
        fingerprint="f",
    )


@pytest.mark.parametrize(
    ("text", "kind", "field"),
    [
        ("could not select device driver with capabilities", UnsupportedOption, "gpu_limit"),
        ("Minimum memory limit allowed is 6MB", InvalidJobSpec, "memory_limit"),
        ('exec: "nosuch": executable file not found in $PATH', InvalidJobSpec, "entrypoint"),
        ("exec /bin/x: no such file or directory", InvalidJobSpec, "entrypoint"),
        ("something else", None, None),
    ],
)
def test_start_refusals(text: str, kind: type[PmanError] | None, field: str | None) -> None:
    out = start_refusal(api_error(400, text), spec(1), "Docker engine")
    if kind is None:
        assert out is None
    else:
        assert type(out) is kind and field in out.fields
        assert "Docker engine" in out.message and text in out.message
    assert start_refusal(requests.exceptions.ConnectionError(text), spec(), "x") is None
