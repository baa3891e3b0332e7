"""The local backend's sandbox plans and its settings, without running a job
(tests/integration/test_local_sandbox.py runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pman.backends.local import LocalBackend
from pman.backends.local import sandbox as local_sandbox
from pman.backends.local.sandbox import Bind, JobUser, build, resolve_user
from pman.backends.local.settings import LocalSettings
from pman.errors import ConfigError
from pman.settings import load_settings

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="pman runs as root here")


def test_settings_take_a_user_and_read_only_paths() -> None:
    local = load_settings({"STOREBASE": "/srv/x"}).resource.engine_as(LocalSettings)
    assert (local.user, local.read_only_paths) == (None, ())
    s = load_settings(
        {
            "STOREBASE": "/srv/x",
            "PMAN_LOCAL_USER": "1000:users",
            "PMAN_LOCAL_READ_ONLY_PATHS": "/opt/venv, /srv/tools/",
        }
    )
    local = s.resource.engine_as(LocalSettings)
    assert local.user == "1000:users"
    assert local.read_only_paths == (Path("/opt/venv"), Path("/srv/tools"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PMAN_LOCAL_USER", "1000:"),
        ("PMAN_LOCAL_USER", "a b"),
        ("PMAN_LOCAL_USER", "1:2:3"),
        ("PMAN_LOCAL_READ_ONLY_PATHS", "relative/path"),
        ("PMAN_LOCAL_READ_ONLY_PATHS", "/opt,/"),
    ],
)
def test_bad_local_settings_are_refused_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"STOREBASE": "/srv/x", name: value})
    assert name in e.value.fields


@ROOT_ONLY
def test_a_root_pman_runs_jobs_as_nobody_unless_told() -> None:
    assert resolve_user(None) == JobUser(65534, 65534, switch=True)
    assert resolve_user("nobody") == JobUser(65534, 65534, switch=True)
    assert resolve_user("4321") == JobUser(4321, 4321, switch=True)  # no account: own group
    assert resolve_user("4321:nogroup") == JobUser(4321, 65534, switch=True)
    for bad in ("0", "root", "1000:0", "no-such-user-here"):
        with pytest.raises(ValueError):
            resolve_user(bad)


def test_the_environment_goes_through_a_file_descriptor_not_the_command_line() -> None:
    user = JobUser(4321, 4321, switch=True)
    binds = [Bind("/srv/sb/in", "/share/incoming"), Bind("/srv/sb/out", "/share/outgoing", True)]
    run = build("/usr/bin/bwrap", user, binds, ["prog", "a"], {"TOKEN": "s3cret"}, "/w")
    assert "s3cret" not in run["args"]
    assert run["options"] == ["--clearenv", "--setenv", "TOKEN", "s3cret"]
    args = run["args"]
    for flag in ("--unshare-user", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert args[-3:] == ["--", "prog", "a"]
    # a root supervisor binds the folders itself and shows bwrap its stage
    assert run["stage"] == [
        {"source": "/srv/sb/in", "name": "0", "dir": False},
        {"source": "/srv/sb/out", "name": "1", "dir": False},
    ]
    i, o = args.index("/share/incoming"), args.index("/share/outgoing")
    assert args[i - 2 : i + 1] == ["--ro-bind", "/mnt/0", "/share/incoming"]
    assert args[o - 2 : o + 1] == ["--bind", "/mnt/1", "/share/outgoing"]
    assert run["user"] == [4321, 4321]
    # pman's own user (not root): bwrap resolves the folders, nothing to stage
    mine = build("/usr/bin/bwrap", JobUser(1000, 1000, switch=False), binds, ["p"], {}, "/w")
    assert (mine["stage"], mine["user"]) == ([], None)
    assert "/srv/sb/in" in mine["args"]


def test_what_cannot_pass_into_bwrap_is_refused() -> None:
    user = JobUser(4321, 4321, switch=True)
    with pytest.raises(ValueError, match="NUL"):
        build("bwrap", user, [], ["p"], {"A": "x\0--bind"}, "/")
    too_many = {f"V{i}": "" for i in range(local_sandbox.MAX_ENV + 1)}
    with pytest.raises(ValueError, match="env entries"):
        build("bwrap", user, [], ["p"], too_many, "/")


def test_no_bwrap_means_no_local_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(local_sandbox, "BWRAP_DIRS", ())
    settings = load_settings({"STOREBASE": str(tmp_path), "PMAN_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError) as e:
        LocalBackend.from_settings(settings)
    assert "bubblewrap" in e.value.message and "CONTAINER_ENV" in e.value.fields
