"""The batch script and sbatch's options, without a cluster."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pytest

from pman.backends.kit.paths import rewrite_text as to_host
from pman.backends.slurm.comment import parse_comment
from pman.backends.slurm.script import (
    TEMPLATE,
    _template,
    apptainer_image,
    build_script,
    option_lines,
    refusal,
    sbatch_options,
)
from pman.errors import InvalidJobSpec, UnsupportedOption
from pman.models import Mounts
from tests.unit.backends.slurm.cases import CASES, FIXTURES, render
from tests.unit.backends.slurm.helpers import config, spec

# ---------------------------------------------------------------- sbatch and the script


def test_sbatch_options(tmp_path: Path) -> None:
    s = config(
        tmp_path,
        SLURM_PARTITION="gpu",
        SLURM_ACCOUNT="chris-lab",
        SLURM_QOS="normal",
        SLURM_EXTRA_OPTIONS="--constraint=intel --reservation 'r 1'",
        TIMELIMIT_MINUTES="45",
    )
    jobdir = tmp_path / "jobs" / "job-1"
    opts = sbatch_options(spec(tmp_path, gpu_limit=2, number_of_workers=3), s, jobdir)
    assert "--job-name=job-1" in opts
    assert f"--output={jobdir}/log" in opts and "--open-mode=append" in opts
    assert "--export=NONE" in opts and "--no-requeue" in opts
    assert "--time=45" in opts
    assert "--cpus-per-task=2" in opts  # 1500 millicores, rounded up
    assert "--mem=300M" in opts
    assert "--gres=gpu:2" in opts
    assert "--array=1-3" in opts
    assert opts[-6:] == [
        "--partition=gpu",
        "--account=chris-lab",
        "--qos=normal",
        "--constraint=intel",
        "--reservation",
        "r 1",
    ]
    comment = next(o for o in opts if o.startswith("--comment="))
    assert parse_comment(comment.split("=", 1)[1]) == {
        "instance": s.instance,
        "fingerprint": "f" * 32,
        "workers": "3",
        "auid": "chris",
    }
    one = sbatch_options(spec(tmp_path, cpu_limit=100), s, jobdir)
    assert "--cpus-per-task=1" in one
    assert not any(o.startswith(("--array", "--gres")) for o in one)
    lax = sbatch_options(spec(tmp_path), config(tmp_path, IGNORE_LIMITS="yes"), jobdir)
    assert not any(o.startswith(("--mem", "--cpus-per-task")) for o in lax)


def bash_syntax_ok(script: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_docker_script(tmp_path: Path) -> None:
    s = config(tmp_path, JOB_LABELS="team=x", SHM_SIZE="64", CONTAINER_USER="1000:1001")
    sp = replace(spec(tmp_path), uid=1000, gid=1001)
    script = build_script(sp, s, tmp_path / "jobs" / "job-1")
    bash_syntax_ok(script, tmp_path)
    sb = tmp_path / "sb"
    assert f"-v {sb}/key/in:/share/incoming:ro" in script
    assert f"-v {sb}/key/out:/share/outgoing:rw" in script
    assert "--memory=300m" in script and "--memory-swap=300m" in script
    assert "--cpus=1.5" in script and "--shm-size=64m" in script
    assert "--user=1000:1001" in script and "--label team=x" in script
    assert "-e 'GREETING=hello world'" in script
    assert "-e PMAN_WORKER_INDEX" in script
    assert "--entrypoint simpledsapp" in script
    # the request's own /share paths stay: the container sees them
    assert "'it'\"'\"'s' /share/incoming /share/outgoing" in script
    assert 'container=job-1-"$SLURM_JOB_ID"' in script
    assert "trap on_signal TERM" in script and 'rm -f "$container"' in script
    assert "org.chrisproject.pman=" not in script  # never mistaken for a docker backend job


def test_podman_script_with_gpus(tmp_path: Path) -> None:
    s = config(tmp_path, SLURM_CONTAINER_RUNTIME="podman")
    script = build_script(spec(tmp_path, gpu_limit=1), s, tmp_path / "j")
    bash_syntax_ok(script, tmp_path)
    assert "engine=podman" in script and "nvidia.com/gpu=$i" in script
    assert 'rm -f --time 0 "$container"' in script  # not podman's 10 s stop timeout
    docker = build_script(spec(tmp_path, gpu_limit=1), config(tmp_path), tmp_path / "j")
    assert "--gpus" in docker and "CUDA_VISIBLE_DEVICES" in docker


def test_apptainer_script(tmp_path: Path) -> None:
    s = config(tmp_path, SLURM_CONTAINER_RUNTIME="apptainer")
    script = build_script(spec(tmp_path, gpu_limit=1), s, tmp_path / "j")
    bash_syntax_ok(script, tmp_path)
    assert "apptainer exec \\\n  --containall \\\n  --cleanenv" in script
    assert f"--bind {tmp_path}/sb/key/in:/share/incoming:ro" in script
    assert "  --nv \\\n" in script
    assert "docker://fnndsc/pl-simpledsapp:2.1" in script
    assert "export APPTAINERENV_GREETING='hello world'" in script
    assert 'export APPTAINERENV_PMAN_WORKER_INDEX="$PMAN_WORKER_INDEX"' in script
    sing = build_script(
        spec(tmp_path), config(tmp_path, SLURM_CONTAINER_RUNTIME="singularity"), tmp_path
    )
    assert "singularity exec" in sing and "SINGULARITYENV_GREETING" in sing
    bad = replace(spec(tmp_path), env=["NOT-A-NAME=1"])
    with pytest.raises(UnsupportedOption) as e:
        build_script(bad, s, tmp_path)
    assert "env" in e.value.fields
    assert apptainer_image("/images/x.sif") == "/images/x.sif"
    assert apptainer_image("oras://reg/x:1") == "oras://reg/x:1"
    assert apptainer_image("fnndsc/x") == "docker://fnndsc/x"


def test_none_script_rewrites_container_paths(tmp_path: Path) -> None:
    s = config(tmp_path, SLURM_CONTAINER_RUNTIME="none")
    script = build_script(spec(tmp_path), s, tmp_path / "j")
    bash_syntax_ok(script, tmp_path)
    sb = tmp_path / "sb"
    assert f"{sb}/key/in {sb}/key/out </dev/null &" in script
    assert f"WHERE={sb}/key/out/x" in script
    assert f"PMAN_OUTGOING={sb}/key/out" in script
    assert "/share/" not in script


def test_to_host() -> None:
    args = ("/in", "/out")
    assert to_host("/share/incoming", *args) == "/in"
    assert to_host("/share/outgoing/a/b", *args) == "/out/a/b"
    assert to_host("--out=/share/outgoing", *args) == "--out=/out"
    assert to_host("/share/outgoingx", *args) == "/share/outgoingx"
    assert to_host("/x/share/incoming", *args) == "/x/share/incoming"


def test_docker_refuses_a_colon_in_a_bind_source(tmp_path: Path) -> None:
    sp = spec(tmp_path)
    sp = replace(sp, mounts=replace(sp.mounts, output_host=tmp_path / "a:b"))
    with pytest.raises(InvalidJobSpec) as e:
        build_script(sp, config(tmp_path), tmp_path)
    assert "output_dir" in e.value.fields


# ---------------------------------------------------------------- byte for byte


@pytest.mark.parametrize("name", sorted(CASES))
def test_script_and_options_are_what_they_were(name: str, tmp_path: Path) -> None:
    """The script from the template is byte for byte the one the code wrote
    before the template (tests/unit/backends/slurm/scripts/), and so are the
    sbatch options."""
    script, options = render(CASES[name])
    assert script.encode() == (FIXTURES / f"{name}.sh").read_bytes()
    assert options == json.loads((FIXTURES / f"{name}.sbatch.json").read_text())
    bash_syntax_ok(script, tmp_path)


def test_the_template_ships_with_the_package() -> None:
    assert resources.files("pman.backends.slurm").joinpath(TEMPLATE).is_file()


def test_a_value_without_a_quoting_filter_fails_the_rendering() -> None:
    env = _template().environment
    with pytest.raises(TypeError, match="without a quoting filter"):
        env.from_string("rm -rf {{ path }}").render(path="/ x")
    assert env.from_string("rm -rf {{ path|q }}").render(path="/ x") == "rm -rf '/ x'"
    assert env.from_string("n={{ n }}").render(n=3) == "n=3"
    with pytest.raises(ValueError, match="not a plain name"):
        env.from_string("{{ x|name }}").render(x="a b")
    assert env.from_string("# {{ x|comment }}").render(x="a\nrm -rf /") == "# a\\nrm -rf /"
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing|q }}").render()


def test_option_lines_keep_each_option_with_its_values() -> None:
    assert option_lines(["-v", "a:b", "-e", "X=1", "--cpus=1", "--label", "k=v"]) == [
        ["-v", "a:b"],
        ["-e", "X=1"],
        ["--cpus=1"],
        ["--label", "k=v"],
    ]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("runtime", "change", "error", "fields"),
    [
        ("apptainer", {"uid": 1000}, UnsupportedOption, {}),
        ("none", {"gid": 1000}, UnsupportedOption, {}),
        ("singularity", {"uid": 1, "gid": 1}, UnsupportedOption, {}),
        ("apptainer", {"env": ["NOT-A-NAME=1"]}, UnsupportedOption, {"env"}),
        ("singularity", {"env": ["1X=1"]}, UnsupportedOption, {"env"}),
        ("docker", {"mounts": Mounts("a:b", "out", None, None)}, InvalidJobSpec, {"input_dir"}),
        ("podman", {"mounts": Mounts("in", "o:ut", None, None)}, InvalidJobSpec, {"output_dir"}),
    ],
)
def test_jobs_the_script_cannot_express(
    tmp_path: Path, runtime: str, change: dict[str, Any], error: type, fields: set[str]
) -> None:
    c = config(tmp_path, SLURM_CONTAINER_RUNTIME=runtime)
    sp = replace(spec(tmp_path), **change)
    refused = refusal(sp, c)
    assert type(refused) is error
    assert set(refused.fields) == set(fields)
    with pytest.raises(error):
        build_script(sp, c, tmp_path)


@pytest.mark.parametrize(
    ("runtime", "change"),
    [
        ("docker", {"uid": 1000, "gid": 1}),
        ("podman", {"gid": 1, "env": ["NOT-A-NAME=1"]}),
        ("none", {"env": ["NOT-A-NAME=1"], "mounts": Mounts("a:b", "o:ut", None, None)}),
        ("apptainer", {"mounts": Mounts("a:b", "o:ut", None, None)}),
    ],
)
def test_jobs_the_script_can_express(tmp_path: Path, runtime: str, change: dict[str, Any]) -> None:
    sp = replace(spec(tmp_path), **change)
    assert refusal(sp, config(tmp_path, SLURM_CONTAINER_RUNTIME=runtime)) is None
