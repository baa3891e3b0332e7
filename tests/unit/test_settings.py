"""Settings: defaults, parsing, every error at once, no network."""

from __future__ import annotations

import socket

import pytest

from pman.backends import load_backend
from pman.errors import ConfigError
from pman.settings import load_settings
from pman.settings.jobs import ContainerUser, IdRange, parse_labels, parse_mebibytes


def test_defaults_run_the_local_backend() -> None:
    s = load_settings({"STOREBASE": "/tmp/sb"})
    assert s.container_env == "local"
    assert s.storage_type == "host"
    assert s.job_logs_tail == 1000
    assert s.remove_jobs is True
    assert s.ignore_limits is False


def test_all_errors_reported_together() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            {
                "CONTAINER_ENV": "mainframe",
                "JOB_LOGS_TAIL": "-3",
                "CONTAINER_USER": "1000",
                "SHM_SIZE": "lots",
                "REMOVE_JOBS": "perhaps",
                "JOB_LABELS": "novalue",
            }
        )
    assert set(e.value.fields) == {
        "CONTAINER_ENV",
        "JOB_LOGS_TAIL",
        "CONTAINER_USER",
        "SHM_SIZE",
        "REMOVE_JOBS",
        "JOB_LABELS",
        "STOREBASE",
    }
    for name in e.value.fields:
        assert name in e.value.message


def test_storage_requirements() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"STORAGE_TYPE": "nfs", "CONTAINER_ENV": "docker"})
    assert set(e.value.fields) == {"STOREBASE", "NFS_SERVER"}
    with pytest.raises(ConfigError) as e:
        load_settings({"STORAGE_TYPE": "docker_local_volume"})
    assert "STORAGE_TYPE" in e.value.fields


def test_upstream_style_values() -> None:
    s = load_settings(
        {
            "STOREBASE": "/tmp/sb",
            "IGNORE_LIMITS": "yes",
            "REMOVE_JOBS": "no",
            "ENABLE_HOME_WORKAROUND": "yes",
            "SHM_SIZE": "2Gi",
            "CONTAINER_USER": "1000-1010:100",
            "JOB_LABELS": "a=1,b=two",
        }
    )
    assert s.ignore_limits and not s.remove_jobs and s.enable_home_workaround
    assert s.shm_size == 2048
    assert s.container_user == ContainerUser(IdRange(1000, 1010), IdRange(100, 100))
    assert s.job_labels == {"a": "1", "b": "two"}


@pytest.mark.parametrize(("text", "mib"), [("512", 512), ("64m", 64), ("1Gi", 1024), ("2G", 2048)])
def test_mebibytes(text: str, mib: int) -> None:
    assert parse_mebibytes(text) == mib


def test_labels_parse() -> None:
    assert parse_labels("") == {}
    assert parse_labels("x=1, y = a=b") == {"x": "1", "y": "a=b"}
    with pytest.raises(ValueError):
        parse_labels("=1")


def test_loading_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("network used while loading settings")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    s = load_settings(
        {
            "CONTAINER_ENV": "docker",
            "STORAGE_TYPE": "docker_local_volume",
            "DOCKER_HOST": "tcp://127.0.0.1:1",
        }
    )
    backend = load_backend(s.container_env, s)  # building the backend is offline too
    assert backend.name == "docker"


def test_unknown_backend_name_is_a_config_error() -> None:
    # a name load_settings accepts for some build but no registry entry has
    s = load_settings({"STOREBASE": "/tmp"})
    with pytest.raises(ConfigError) as e:
        load_backend("no-such-backend", s)
    assert "CONTAINER_ENV" in e.value.fields


def test_cli_refuses_to_start_with_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pman.__main__ import main

    monkeypatch.setenv("CONTAINER_ENV", "nope")
    monkeypatch.setenv("JOB_LOGS_TAIL", "x")
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "CONTAINER_ENV" in err and "JOB_LOGS_TAIL" in err


def test_instance_names_one_registry() -> None:
    base = {"STOREBASE": "/tmp/sb"}
    a = load_settings({**base, "PMAN_DATA_DIR": "/srv/pman-a"})
    again = load_settings({**base, "PMAN_DATA_DIR": "/srv/pman-a"})
    b = load_settings({**base, "PMAN_DATA_DIR": "/srv/pman-b"})
    assert a.instance == again.instance != b.instance
    assert load_settings({**base, "PMAN_INSTANCE": "site-1"}).instance == "site-1"
