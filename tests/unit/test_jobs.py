"""Command building for ds/fs/ts plugins and path-flag localisation."""

from __future__ import annotations

from pathlib import Path

from pman.jobs import build_command, build_spec, localize_path_args
from pman.models import JobRequest
from pman.settings import Settings
from pman.storage import Storage
from tests.helpers import job_body


def test_ds_gets_input_and_output() -> None:
    cmd = build_command(["python3", "app.py"], ["--x", "1"], [], "ds")
    assert cmd == ["python3", "app.py", "--x", "1", "/share/incoming", "/share/outgoing"]


def test_fs_and_ts_get_output_only() -> None:
    for plugin_type in ("fs", "ts"):
        assert build_command(["run"], [], [], plugin_type) == ["run", "/share/outgoing"]  # type: ignore[arg-type]


def test_path_flags_are_localized() -> None:
    args = ["--mask", "some/where/mask.nii", "--n", "3", "--other", "x/y"]
    out = localize_path_args(args, {"--mask", "--other"})
    assert out == ["--mask", "/share/incoming", "--n", "3", "--other", "/share/incoming"]


def test_path_flag_as_last_argument_is_kept() -> None:
    assert localize_path_args(["--n", "3", "--mask"], {"--mask"}) == ["--n", "3", "--mask"]


def test_value_equal_to_a_flag_is_not_treated_as_a_flag() -> None:
    # "--mask --mask": the second is the first's value, replaced; nothing after it is.
    out = localize_path_args(["--mask", "--mask", "keep"], {"--mask"})
    assert out == ["--mask", "/share/incoming", "keep"]


def test_spec_carries_env_user_labels(settings: Settings, storebase: Path, tmp_path: Path) -> None:
    from tests.unit.conftest import make_settings

    s = make_settings(
        storebase,
        tmp_path,
        ENABLE_HOME_WORKAROUND="yes",
        CONTAINER_USER="1001:1002",
        JOB_LABELS="site=bch, team = fnndsc",
    )
    request = JobRequest(**job_body(jid="j", env=["A=1"], args_path_flags=[]))
    spec = build_spec(request, s, Storage(s))
    assert spec.env == ["A=1", "HOME=/tmp"]
    assert (spec.uid, spec.gid) == (1001, 1002)
    assert spec.labels["site"] == "bch"
    assert spec.labels["team"] == "fnndsc"
    assert spec.labels["org.chrisproject.pman.jid"] == "j"
    assert spec.mounts.input_host == (storebase / "key-1" / "incoming").resolve()
    assert spec.mounts.output_host == (storebase / "key-1" / "outgoing").resolve()


def test_uid_range_picks_inside_the_range(storebase: Path, tmp_path: Path) -> None:
    from tests.unit.conftest import make_settings

    s = make_settings(storebase, tmp_path, CONTAINER_USER="2000-2005:")
    request = JobRequest(**job_body(jid="j"))
    uids = {build_spec(request, s, Storage(s)).uid for _ in range(60)}
    assert uids <= set(range(2000, 2006))
    assert len(uids) > 1
    assert build_spec(request, s, Storage(s)).gid is None


def test_fingerprint_tells_requests_apart() -> None:
    a = JobRequest(**job_body(jid="j"))
    assert a.fingerprint() == JobRequest(**job_body(jid="j")).fingerprint()
    assert a.fingerprint() != JobRequest(**job_body(jid="j", cpu_limit=2000)).fingerprint()
