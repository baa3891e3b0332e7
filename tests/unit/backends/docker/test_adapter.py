"""The docker and podman backends over a scripted Engine API: what they refuse
before any engine call, the calls a submit makes, how the engine's answers
become pman's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from pman.backends.docker import DockerBackend, PodmanBackend
from pman.backends.docker.config import DockerConfig
from pman.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
from pman.labels import LABEL_MANAGED
from pman.models import JobSpec, JobState, Mounts, Resources
from pman.settings import load_settings
from tests.unit.backends.docker.scripted import ScriptedAPI, api_error


def FakeAPI(**answers: list[Any]) -> ScriptedAPI:
    """The engine as the container backends see it: a container created,
    started, inspected (owned by pman) unless the script says otherwise."""
    defaults = {
        "create_container": lambda **kw: {"Id": "c1"},
        "inspect_container": owned,
        "pull": lambda *a, **kw: [],
        "containers": lambda **kw: [],
        "events": lambda **kw: iter([]),
    }
    return ScriptedAPI(defaults, **answers)


def owned(name: str, status: str = "running") -> dict[str, Any]:
    return {
        "Id": "c1",
        "Name": f"/{name}",
        "Created": "2026-11-23T09:59:59Z",
        "State": {"Status": status, "ExitCode": 0, "StartedAt": "2026-11-23T10:00:00Z"},
        "Config": {"Image": "img", "Labels": {LABEL_MANAGED: "true"}},
        "HostConfig": {"Memory": 0},
    }


def backend(
    tmp_path: Path, api: ScriptedAPI, cls: type[DockerBackend] = DockerBackend
) -> DockerBackend:
    s = load_settings({"CONTAINER_ENV": cls.name, "STOREBASE": str(tmp_path)})
    return cls(DockerConfig.from_settings(s), api)  # type: ignore[arg-type]


def spec(tmp_path: Path, workers: int = 1, gpus: int = 0) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="img",
        command=["copyplugin", "/share/outgoing"],
        env=[],
        resources=Resources(workers, 500, 64, gpus),
        mounts=Mounts("in", "out", tmp_path / "in", tmp_path / "out"),
        plugin_type="fs",
        auid="chris",
        fingerprint="f",
    )


@pytest.mark.parametrize("cls", [DockerBackend, PodmanBackend])
def test_several_workers_are_refused_before_any_engine_call(
    tmp_path: Path, cls: type[DockerBackend]
) -> None:
    api = FakeAPI()
    b = backend(tmp_path, api, cls)
    with pytest.raises(UnsupportedOption) as e:
        b.check(spec(tmp_path, workers=2))
    assert e.value.fields == {"number_of_workers": "must be 1"}
    assert e.value.message == (
        f"the {cls.name} backend runs one container per job (number_of_workers must be 1, got 2)"
    )
    with pytest.raises(UnsupportedOption):
        b.submit(spec(tmp_path, workers=2))  # a direct submit refuses too
    assert api.calls == []


def test_podman_refuses_gpus_first_docker_leaves_them_to_the_engine(tmp_path: Path) -> None:
    api = FakeAPI()
    with pytest.raises(UnsupportedOption) as e:
        backend(tmp_path, api, PodmanBackend).check(spec(tmp_path, workers=2, gpus=1))
    assert e.value.fields == {"gpu_limit": "must be 0 on Podman"}
    backend(tmp_path, api).check(spec(tmp_path, gpus=1))
    assert api.calls == []


def test_a_submit_is_one_create_and_one_start(tmp_path: Path) -> None:
    api = FakeAPI()
    info = backend(tmp_path, api).submit(spec(tmp_path))
    assert api.calls == ["create_container", "start"]
    assert (info.state, info.native_id, info.message) == (JobState.RUNNING, "c1", "started")


def test_a_missing_image_is_pulled_then_named(tmp_path: Path) -> None:
    missing = api_error(docker.errors.ImageNotFound, 404, "No such image: img")
    api = FakeAPI(create_container=[missing])
    backend(tmp_path, api).submit(spec(tmp_path))
    assert api.calls == ["create_container", "pull", "create_container", "start"]

    api = FakeAPI(
        create_container=[missing],
        pull=[[{"status": "pulling"}, {"error": "pull access denied"}]],
    )
    with pytest.raises(InvalidJobSpec) as e:
        backend(tmp_path, api).submit(spec(tmp_path))
    assert e.value.fields == {"image": "not present and not pullable"}
    assert "could not be pulled: pull access denied" in e.value.message


def test_a_taken_name_is_job_exists_with_the_job_there(tmp_path: Path) -> None:
    for taken in (
        api_error(docker.errors.APIError, 409, "Conflict"),
        api_error(docker.errors.APIError, 500, 'the container name "job-1" is already in use'),
    ):
        api = FakeAPI(create_container=[taken])
        with pytest.raises(JobExists) as e:
            backend(tmp_path, api).submit(spec(tmp_path))
        assert e.value.message == "a container named 'job-1' exists already"
        assert e.value.existing is not None and e.value.existing.name == "job-1"


def test_a_start_refused_removes_the_container(tmp_path: Path) -> None:
    refused = api_error(docker.errors.APIError, 400, "executable file not found in $PATH")
    api = FakeAPI(start=[refused])
    with pytest.raises(InvalidJobSpec) as e:
        backend(tmp_path, api).submit(spec(tmp_path))
    assert "entrypoint" in e.value.fields
    assert api.calls == ["create_container", "start", "remove_container"]

    api = FakeAPI(start=[requests.exceptions.ReadTimeout()])
    with pytest.raises(BackendUnavailable) as u:
        backend(tmp_path, api).submit(spec(tmp_path))
    assert "while starting container 'job-1'" in u.value.message
    assert api.calls[-1] == "remove_container"


def test_containers_pman_did_not_make_are_no_jobs(tmp_path: Path) -> None:
    stranger = owned("job-1")
    stranger["Config"]["Labels"] = {}
    gone = api_error(docker.errors.NotFound, 404, "No such container")
    api = FakeAPI(inspect_container=[stranger, gone, stranger, gone])
    b = backend(tmp_path, api)
    for _ in range(2):
        with pytest.raises(JobNotFound) as e:
            b.get("job-1")
        assert e.value.message == "no job named 'job-1' on the Docker engine"
    b.delete("job-1")  # not a job: left alone, not an error
    b.delete("job-1")
    assert "remove_container" not in api.calls


def test_an_unreachable_engine_names_where_and_what(tmp_path: Path) -> None:
    api = FakeAPI(containers=[requests.exceptions.ConnectionError("refused")])
    with pytest.raises(BackendUnavailable) as e:
        backend(tmp_path, api).list()
    assert e.value.message == (
        "Docker engine at unix:///var/run/docker.sock is unreachable while listing "
        "pman's containers: refused"
    )


def test_events_name_the_jobs_that_may_have_changed(tmp_path: Path) -> None:
    def event(action: str, name: str) -> dict[str, Any]:
        return {"Type": "container", "Action": action, "Actor": {"Attributes": {"name": name}}}

    stream = [event("start", "a"), event("die", "a"), event("exec", "b"), event("remove", "b")]
    api = FakeAPI(events=[stream])
    assert list(backend(tmp_path, api).watch()) == ["", "a", "b"]
