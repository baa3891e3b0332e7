"""Confinement and limits (issue 7): request size, list and string lengths,
per-job caps, the image allowlist, and their settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, run_wsgi_app

from pman.app import create_app
from pman.errors import ConfigError
from pman.limits import ImagePattern, parse_capabilities, parse_image, parse_image_allowlist
from pman.settings import load_settings
from tests.helpers import job_body
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend


def client_with(storebase: Path, tmp_path: Path, fake: FakeBackend, **env: str) -> FlaskClient:
    app = create_app(settings=make_settings(storebase, tmp_path, **env), backend=fake)
    return app.test_client()


def rejected(resp: Any, field: str, *words: str) -> dict[str, Any]:
    assert resp.status_code == 400, resp.get_json()
    data = resp.get_json()
    assert field in data["fields"], data
    for word in (field, *words):
        assert word in data["message"], data
    return data


# ---- request size -----------------------------------------------------------------
def test_a_body_over_the_limit_is_413_before_parsing(
    storebase: Path, tmp_path: Path, fake: FakeBackend
) -> None:
    client = client_with(storebase, tmp_path, fake, PMAN_MAX_REQUEST_BYTES="2048")
    body = job_body(args=["x" * 3000])
    resp = client.post("/api/v1/", json=body)
    assert resp.status_code == 413
    data = resp.get_json()
    assert "PMAN_MAX_REQUEST_BYTES" in data["message"] and "2048" in data["message"]
    assert fake.calls == []
    # not JSON at all, but too big: still 413 (the size is checked first)
    resp = client.post("/api/v1/", data=b"{" * 5000, content_type="application/json")
    assert resp.status_code == 413
    assert client.post("/api/v1/", json=job_body(jid="small")).status_code == 201


def test_a_chunked_body_over_the_limit_is_413(
    storebase: Path, tmp_path: Path, fake: FakeBackend
) -> None:
    settings = make_settings(storebase, tmp_path, PMAN_MAX_REQUEST_BYTES="2048")
    app = create_app(settings=settings, backend=fake)

    def send(payload: bytes) -> tuple[str, dict[str, Any]]:
        environ = EnvironBuilder(
            method="POST", path="/api/v1/", data=payload, content_type="application/json"
        ).get_environ()
        # as a server gives a chunked body: no length, the stream ends by itself
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
        app_iter, status, _ = run_wsgi_app(app, environ)
        return status, json.loads(b"".join(app_iter))

    status, data = send(json.dumps(job_body(args=["y" * 4000])).encode())
    assert status.startswith("413"), data
    assert "PMAN_MAX_REQUEST_BYTES" in data["message"]
    status, data = send(json.dumps(job_body(jid="chunked-small")).encode())
    assert status.startswith("201"), data
    assert fake.calls == ["submit"]


# ---- static bounds (schema) -------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jid", "j" * 129),
        ("auid", "a" * 256),
        ("image", "i" * 513),
        ("input_dir", "d/" * 2049),
        ("output_dir", "o" * 4097),
        ("cpu_limit", 2**31),
        ("memory_limit", str(2**40)),
        ("number_of_workers", 10**30),
    ],
)
def test_static_bounds(client: FlaskClient, fake: FakeBackend, field: str, value: Any) -> None:
    rejected(client.post("/api/v1/", json=job_body(**{field: value})), field)
    assert fake.calls == []


def test_a_jid_of_128_characters_is_fine_where_the_backend_allows_it(
    client: FlaskClient,
) -> None:
    assert client.post("/api/v1/", json=job_body(jid="j" * 128)).status_code == 201


# ---- configurable list and string limits --------------------------------------------
@pytest.mark.parametrize(
    ("env", "overrides", "field", "setting"),
    [
        ({"PMAN_MAX_ARGS": "3"}, {"args": ["a"] * 4}, "args", "PMAN_MAX_ARGS"),
        ({"PMAN_MAX_ARGS": "3"}, {"entrypoint": ["e"] * 4}, "entrypoint", "PMAN_MAX_ARGS"),
        (
            {"PMAN_MAX_ARGS": "3"},
            {"args_path_flags": ["--a", "--b", "--c", "--d"]},
            "args_path_flags",
            "PMAN_MAX_ARGS",
        ),
        ({"PMAN_MAX_ARG_LENGTH": "10"}, {"args": ["ok", "x" * 11]}, "args", "PMAN_MAX_ARG_LENGTH"),
        ({"PMAN_MAX_ENV": "2"}, {"env": ["A=1", "B=2", "C=3"]}, "env", "PMAN_MAX_ENV"),
        ({"PMAN_MAX_ENV_LENGTH": "8"}, {"env": ["A=123456789"]}, "env", "PMAN_MAX_ENV_LENGTH"),
    ],
)
def test_list_limits(
    storebase: Path,
    tmp_path: Path,
    fake: FakeBackend,
    env: dict[str, str],
    overrides: dict[str, Any],
    field: str,
    setting: str,
) -> None:
    client = client_with(storebase, tmp_path, fake, **env)
    rejected(client.post("/api/v1/", json=job_body(**overrides)), field, setting)
    assert fake.calls == []


def test_at_the_list_limits_is_fine(storebase: Path, tmp_path: Path, fake: FakeBackend) -> None:
    client = client_with(
        storebase,
        tmp_path,
        fake,
        PMAN_MAX_ARGS="3",
        PMAN_MAX_ARG_LENGTH="10",
        PMAN_MAX_ENV="2",
        PMAN_MAX_ENV_LENGTH="8",
    )
    body = job_body(args=["a", "b", "x" * 10], env=["A=123456", "B=2"])
    assert client.post("/api/v1/", json=body).status_code == 201


def test_default_list_limits_are_generous(client: FlaskClient) -> None:
    body = job_body(args=["x" * 4096] * 100, env=[f"V{i}=" + "v" * 1000 for i in range(500)])
    assert client.post("/api/v1/", json=body).status_code == 201
    over = job_body(args=["x" * 4097])
    rejected(client.post("/api/v1/", json=over), "args", "PMAN_MAX_ARG_LENGTH")


# ---- per-job caps --------------------------------------------------------------------
CAPS = {
    "PMAN_MAX_CPU_LIMIT": "2000",
    "PMAN_MAX_MEMORY_LIMIT": "2Gi",
    "PMAN_MAX_GPU_LIMIT": "1",
    "PMAN_MAX_WORKERS": "4",
}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("cpu_limit", 2001, "cpu_limit 2001 millicores is over this pman's cap of 2000 "
         "millicores (PMAN_MAX_CPU_LIMIT)"),
        ("memory_limit", 4096, "memory_limit 4096 MiB is over this pman's cap of 2048 MiB "
         "(PMAN_MAX_MEMORY_LIMIT)"),
        ("gpu_limit", 2, "gpu_limit 2 GPUs is over this pman's cap of 1 GPUs (PMAN_MAX_GPU_LIMIT)"),
        ("number_of_workers", "5", "number_of_workers 5 workers is over this pman's cap of 4 "
         "workers (PMAN_MAX_WORKERS)"),
    ],
)  # fmt: skip
def test_over_a_cap_is_400_naming_field_and_cap(
    storebase: Path, tmp_path: Path, fake: FakeBackend, field: str, value: Any, expected: str
) -> None:
    client = client_with(storebase, tmp_path, fake, **CAPS)
    data = rejected(client.post("/api/v1/", json=job_body(**{field: value})), field)
    assert data["message"] == expected
    assert data["fields"] == {field: expected}
    assert fake.calls == []


def test_at_the_caps_is_fine_and_all_problems_are_named(
    storebase: Path, tmp_path: Path, fake: FakeBackend
) -> None:
    client = client_with(storebase, tmp_path, fake, **CAPS)
    at = job_body(cpu_limit=2000, memory_limit=2048, gpu_limit=1, number_of_workers=4)
    assert client.post("/api/v1/", json=at).status_code == 201
    over = job_body(cpu_limit=2001, memory_limit=2049)
    data = rejected(client.post("/api/v1/", json=over), "cpu_limit")
    assert set(data["fields"]) == {"cpu_limit", "memory_limit"}


def test_default_caps(client: FlaskClient) -> None:
    big = job_body(cpu_limit=64000, memory_limit=1024 * 1024, gpu_limit=8, number_of_workers=100)
    assert client.post("/api/v1/", json=big).status_code == 201
    data = rejected(
        client.post("/api/v1/", json=job_body(number_of_workers=101)), "number_of_workers"
    )
    assert "PMAN_MAX_WORKERS" in data["message"]


# ---- image allowlist -------------------------------------------------------------------
ALLOW = "ghcr.io/fnndsc/*, docker.io/fnndsc/pl-*, localhost/*, quay.io/org/tool:1.*"


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("ghcr.io/fnndsc/pl-dircopy", True),
        ("ghcr.io/fnndsc/pl-dircopy:2.1.1", True),
        ("GHCR.IO/fnndsc/pl-dircopy", True),  # registries are host names
        ("ghcr.io/fnndsc/sub/pl-x@sha256:" + "a" * 64, True),
        ("ghcr.io/fnndsc.evil.com/pl-x", False),
        ("ghcr.io.evil.com/fnndsc/pl-x", False),
        ("ghcr.io/fnndsc/../x", False),  # not a reference at all
        ("ghcr.io/fnndsc//x", False),
        ("ghcr.io/fnndsc", False),
        ("ghcr.io/FNNDSC/x", False),  # paths are lower case: not a reference
        ("ghcr.io:443/fnndsc/x", False),  # another registry address
        ("fnndsc/pl-simpledsapp", True),  # docker.io/fnndsc/pl-simpledsapp
        ("docker.io/fnndsc/pl-simpledsapp:latest", True),
        ("index.docker.io/fnndsc/pl-x", True),
        ("fnndsc/other", False),
        ("pl-x", False),  # docker.io/library/pl-x
        ("evil/fnndsc/pl-x", False),  # docker.io/evil/fnndsc/pl-x
        ("localhost/pman-test-plugin:latest", True),
        ("localhost:5000/pman-test-plugin", False),
        ("localhost.evil.com/x", False),
        ("quay.io/org/tool:1.2", True),
        ("quay.io/org/tool:2.0", False),
        ("quay.io/org/tool", False),  # :latest
        ("", False),
        ("ghcr.io/fnndsc/x y", False),
        ("ghcr.io/fnndsc/x:", False),
    ],
)
def test_allowlist_matching(image: str, allowed: bool) -> None:
    patterns = parse_image_allowlist(ALLOW)
    try:
        ref = parse_image(image)
    except ValueError:
        assert not allowed
        return
    assert any(p.matches(ref) for p in patterns) is allowed, (image, str(ref))


@pytest.mark.parametrize(
    ("image", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("fnndsc/pl-x:1.0", "docker.io/fnndsc/pl-x:1.0"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("Reg.Example:5000/a/b@sha256:" + "f" * 64, "reg.example:5000/a/b@sha256:" + "f" * 64),
        ("a/b:t@sha256:" + "0" * 64, "docker.io/a/b:t@sha256:" + "0" * 64),
    ],
)  # fmt: skip
def test_references_are_normalised_as_docker_does(image: str, normalised: str) -> None:
    assert str(parse_image(image)) == normalised


@pytest.mark.parametrize("pattern", ["", "ghcr.io/", "ghcr.io/a b/*", "ghcr.io/../*", "x@", "x:"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        ImagePattern.parse(pattern)


def test_allowlist_through_the_api(storebase: Path, tmp_path: Path, fake: FakeBackend) -> None:
    client = client_with(storebase, tmp_path, fake, PMAN_IMAGE_ALLOWLIST=ALLOW)
    data = rejected(
        client.post("/api/v1/", json=job_body(image="ghcr.io/fnndsc.evil.com/x")),
        "image",
        "PMAN_IMAGE_ALLOWLIST",
    )
    assert "ghcr.io/fnndsc/*" in data["message"]
    rejected(client.post("/api/v1/", json=job_body(image="ghcr.io/fnndsc/../x")), "image")
    assert fake.calls == []
    resp = client.post("/api/v1/", json=job_body(jid="allowed", image="fnndsc/pl-x"))
    assert resp.status_code == 201
    # the engine runs exactly the reference that was checked
    assert fake.specs["allowed"].image == "docker.io/fnndsc/pl-x:latest"
    assert resp.get_json()["image"] == "docker.io/fnndsc/pl-x:latest"
    # without an allowlist the image goes to the engine as it was sent
    plain = client_with(storebase, tmp_path / "2", fake)
    assert plain.post("/api/v1/", json=job_body(jid="plain", image="pl-x")).status_code == 201
    assert fake.specs["plain"].image == "pl-x"


# ---- settings ----------------------------------------------------------------------
def test_limit_settings_and_their_errors() -> None:
    s = load_settings(
        {
            "STOREBASE": "/tmp/sb",
            "PMAN_CAP_ADD": "net_bind_service, CAP_CHOWN,chown",
            "PMAN_MAX_MEMORY_LIMIT": "4Gi",
            "PMAN_IMAGE_ALLOWLIST": ALLOW,
            "PMAN_READ_ONLY_ROOTFS": "yes",
            "PMAN_MAX_RUNNING": "3",
        }
    )
    jobs, limits = s.resource.jobs, s.resource.limits
    assert jobs.cap_add == ("CAP_NET_BIND_SERVICE", "CAP_CHOWN")
    assert limits.max_memory_limit == 4096
    assert len(limits.image_allowlist) == 4
    assert (jobs.read_only_rootfs, jobs.max_running) == (True, 3)
    defaults = load_settings({"STOREBASE": "/tmp/sb"})
    jobs, limits = defaults.resource.jobs, defaults.resource.limits
    assert (defaults.server.max_request_bytes, limits.max_args, limits.max_env) == (
        1048576,
        1000,
        500,
    )
    assert (limits.max_workers, jobs.max_running, jobs.cap_add) == (100, 0, ())
    with pytest.raises(ConfigError) as e:
        load_settings(
            {
                "STOREBASE": "/tmp/sb",
                "PMAN_CAP_ADD": "CAP_NET_BIND_SERVICE,CAP_ROOT",
                "PMAN_IMAGE_ALLOWLIST": "ghcr.io/a b",
                "PMAN_MAX_RUNNING": "-1",
                "PMAN_MAX_CPU_LIMIT": "lots",
                "PMAN_MAX_REQUEST_BYTES": "10",
            }
        )
    assert set(e.value.fields) == {
        "PMAN_CAP_ADD",
        "PMAN_IMAGE_ALLOWLIST",
        "PMAN_MAX_RUNNING",
        "PMAN_MAX_CPU_LIMIT",
        "PMAN_MAX_REQUEST_BYTES",
    }
    assert "CAP_ROOT" in e.value.fields["PMAN_CAP_ADD"]


def test_capability_names() -> None:
    assert parse_capabilities("") == ()
    assert parse_capabilities("sys_ptrace,Cap_Kill") == ("CAP_SYS_PTRACE", "CAP_KILL")
    for bad in ("ALL", "CAP_ALL", "root", "CAP_"):
        with pytest.raises(ValueError):
            parse_capabilities(bad)


def test_openapi_documents_the_static_bounds_and_413(client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    props = doc["components"]["schemas"]["JobRequest"]["properties"]
    assert props["jid"]["maxLength"] == 128
    assert "{0,149}" in props["auid"]["pattern"]  # 1 to 150 characters
    assert props["image"]["maxLength"] == 512
    assert props["output_dir"]["maxLength"] == 4096
    assert props["cpu_limit"]["anyOf"][0]["maximum"] == 2**31 - 1
    assert "413" in doc["paths"]["/api/v1/"]["post"]["responses"]
