"""Jobs whose batch script and sbatch options are kept as fixtures
(tests/unit/backends/slurm/scripts/): the script of a job must stay byte for
byte what it was when the fixtures were written (by the code before the
slurm backend became a package: ``python -m tests.unit.backends.slurm.cases``
rewrites them from the current code, for a change made on purpose)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pman.models import JobSpec, Mounts, Resources

FIXTURES = Path(__file__).parent / "scripts"
STOREBASE = "/srv/pman store"


@dataclass(frozen=True)
class Case:
    #: pman's environment (CONTAINER_ENV=slurm and STOREBASE are added)
    env: dict[str, str]
    #: JobSpec fields over the defaults of :func:`spec`
    spec: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)
    job_dir: str = "/var/lib/pman/slurm/jobs/job-1"


def spec(case: Case) -> JobSpec:
    values: dict[str, Any] = {
        "name": "job-1",
        "image": "fnndsc/pl-simpledsapp:2.1",
        "command": ["simpledsapp", "--prefix", "it's", "/share/incoming", "/share/outgoing"],
        "env": ["GREETING=hello world", "WHERE=/share/outgoing/x"],
        "mounts": Mounts(
            "key/in", "key/out", Path(STOREBASE, "key/in"), Path(STOREBASE, "key/out")
        ),
        "plugin_type": "ds",
        "auid": "chris",
        "fingerprint": "f" * 32,
        "labels": {"org.chrisproject.pman": "true"},
        **case.spec,
    }
    resources = {
        "number_of_workers": 1,
        "cpu_limit": 1500,
        "memory_limit": 300,
        "gpu_limit": 0,
        **case.resources,
    }
    return JobSpec(resources=Resources(**resources), **values)


def environment(case: Case) -> dict[str, str]:
    return {
        "CONTAINER_ENV": "slurm",
        "STOREBASE": STOREBASE,
        "PMAN_DATA_DIR": "/var/lib/pman",
        "PMAN_INSTANCE": "inst-1",
        **case.env,
    }


AWKWARD = {
    "name": "my.job_2-x",
    "image": "registry.example:5000/team/tool@sha256:" + "a" * 64,
    "command": [
        "tool",
        "--say",
        'it\'s "quoted" $HOME `id` $(id) \\ ;|&<>*?[]{}~#!',
        "--out=/share/outgoing/sub dir",
        "/share/incoming/a",
        "/share/outgoingx",
        "line\nbreak",
        "",
        "--tab\there",
        "ünïcødé",
    ],
    "env": [
        "A=it's $HOME `x`",
        "B=",
        "C=a=b=c",
        "D=/share/incoming:/share/outgoing/y",
        "E=line\nbreak",
    ],
    "auid": "a user|with;odd=chars",
}

CASES: dict[str, Case] = {
    "docker": Case({"SLURM_CONTAINER_RUNTIME": "docker"}),
    "docker_everything": Case(
        {
            "SLURM_CONTAINER_RUNTIME": "docker",
            "JOB_LABELS": "team=x,site=b c",
            "SHM_SIZE": "64",
            "CONTAINER_USER": "1000:1001",
            "SLURM_PARTITION": "gpu",
            "SLURM_ACCOUNT": "chris-lab",
            "SLURM_QOS": "normal",
            "SLURM_EXTRA_OPTIONS": "--constraint=intel --reservation 'r 1'",
            "TIMELIMIT_MINUTES": "45",
        },
        spec={"uid": 1000, "gid": 1001},
        resources={"gpu_limit": 2, "number_of_workers": 3, "cpu_limit": 250},
    ),
    "docker_gid_only": Case(
        {"SLURM_CONTAINER_RUNTIME": "docker"}, spec={"gid": 1001, "command": ["true"]}
    ),
    "docker_uid_only_awkward": Case(
        {"SLURM_CONTAINER_RUNTIME": "docker", "IGNORE_LIMITS": "yes"},
        spec={**AWKWARD, "uid": 7},
        job_dir="/var/lib/pman/jobs with 'quotes' $x/my.job_2-x",
    ),
    "podman": Case({"SLURM_CONTAINER_RUNTIME": "podman", "SHM_SIZE": "1"}),
    "podman_gpus_awkward": Case(
        {"SLURM_CONTAINER_RUNTIME": "podman"},
        spec=AWKWARD,
        resources={"gpu_limit": 1, "number_of_workers": 2, "memory_limit": 4096},
    ),
    "apptainer": Case({}),
    "apptainer_gpus_sif": Case(
        {"SLURM_CONTAINER_RUNTIME": "apptainer"},
        spec={"image": "/images/tool.sif", "env": ["X_1=$y z", "_u="]},
        resources={"gpu_limit": 1},
    ),
    "singularity_awkward": Case(
        {"SLURM_CONTAINER_RUNTIME": "singularity"},
        spec={**AWKWARD, "image": "oras://reg/x:1", "env": ["A=it's $HOME `x`", "B="]},
        resources={"number_of_workers": 4},
    ),
    "none": Case({"SLURM_CONTAINER_RUNTIME": "none"}),
    "none_awkward": Case(
        {"SLURM_CONTAINER_RUNTIME": "none", "IGNORE_LIMITS": "yes"},
        spec={**AWKWARD, "mounts": Mounts("in dir", "out 'dir'", None, None)},
        resources={"number_of_workers": 2, "gpu_limit": 1},
        job_dir="/jobs/my.job_2-x",
    ),
    "none_no_input": Case(
        {"SLURM_CONTAINER_RUNTIME": "none"},
        spec={"mounts": Mounts("", "out", None, None), "command": ["run"], "env": []},
    ),
}


def render(case: Case) -> tuple[str, list[str]]:
    """The batch script and sbatch options of ``case`` as the code makes them now."""
    from pman.backends.slurm.config import from_settings
    from pman.backends.slurm.script import build_script, sbatch_options
    from pman.settings import load_settings

    config = from_settings(load_settings(environment(case)))
    job_dir = Path(case.job_dir)
    return build_script(spec(case), config, job_dir), sbatch_options(spec(case), config, job_dir)


def write_fixtures() -> None:
    FIXTURES.mkdir(exist_ok=True)
    for name, case in CASES.items():
        script, options = render(case)
        (FIXTURES / f"{name}.sh").write_bytes(script.encode())
        (FIXTURES / f"{name}.sbatch.json").write_text(json.dumps(options, indent=1) + "\n")


if __name__ == "__main__":
    write_fixtures()
