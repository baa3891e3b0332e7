"""The bounds every request is checked against (pman.limits.check_request)."""

from __future__ import annotations

from typing import Annotated

from pman.limits import ImagePattern, parse_image_allowlist
from pman.settings.declare import Env, Section
from pman.settings.jobs import parse_mebibytes


class Limits(Section):
    """What a request may ask for on this resource: counts and lengths of its
    words, per-job caps (0 = no cap) and the images it may run (see [Confinement
    and limits](../README.md#confinement-and-limits))."""

    title = "limits"

    max_args: Annotated[
        int,
        Env(
            "PMAN_MAX_ARGS",
            "the most items in each of `args`, `args_path_flags` and `entrypoint`",
            ge=1,
        ),
    ] = 1000
    max_arg_length: Annotated[
        int, Env("PMAN_MAX_ARG_LENGTH", "the most characters in one of those items", ge=1)
    ] = 4096
    max_env: Annotated[int, Env("PMAN_MAX_ENV", "the most `env` entries", ge=0)] = 500
    max_env_length: Annotated[
        int,
        Env(
            "PMAN_MAX_ENV_LENGTH",
            "the most characters in one `env` entry (`KEY=value`)",
            ge=1,
        ),
    ] = 32768
    max_cpu_limit: Annotated[
        int,
        Env(
            "PMAN_MAX_CPU_LIMIT",
            "the largest `cpu_limit` a job may ask, in millicores; `0`: no cap",
            ge=0,
        ),
    ] = 0
    max_memory_limit: Annotated[
        int,
        Env(
            "PMAN_MAX_MEMORY_LIMIT",
            "the largest `memory_limit` a job may ask, in MiB (`2048`, `2Gi`); `0`: no cap",
            parse=parse_mebibytes,
            form="size in MiB",
        ),
    ] = 0
    max_gpu_limit: Annotated[
        int,
        Env("PMAN_MAX_GPU_LIMIT", "the largest `gpu_limit` a job may ask; `0`: no cap", ge=0),
    ] = 0
    gpus: Annotated[
        bool,
        Env(
            "PMAN_GPUS",
            "`no`: the resource has no GPUs, whatever its engine could give: a job asking a "
            "`gpu_limit` is refused there (400 on `gpu_limit`), and one that names no "
            "resource goes to the next resource that has them",
        ),
    ] = True
    max_workers: Annotated[
        int,
        Env(
            "PMAN_MAX_WORKERS",
            "the largest `number_of_workers` a job may ask; `0`: no cap",
            ge=0,
        ),
    ] = 100
    image_allowlist: Annotated[
        tuple[ImagePattern, ...],
        Env(
            "PMAN_IMAGE_ALLOWLIST",
            "comma-separated image patterns, e.g. `ghcr.io/fnndsc/*,docker.io/fnndsc/pl-*,"
            "localhost/*`; a job's image must match one (400 otherwise)",
            parse=parse_image_allowlist,
            form="comma-separated image patterns",
            default_doc="any image",
        ),
    ] = ()
