"""What one local job's sandbox is: its program, the folders it sees, its
command and environment, as the run the supervisor starts
(:func:`pman.backends.local.sandbox.build` makes bwrap's arguments of them).
Pure but for finding the job's program on the host."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pman.backends.kit.paths import rewrite_arg
from pman.backends.local.sandbox import Bind, JobUser, build, inside, overlap, shown_by_system
from pman.errors import UnsupportedOption
from pman.models import INCOMING, OUTGOING, JobSpec


def find_program(
    name: str, private: list[tuple[str, str]], read_only_paths: tuple[Path, ...]
) -> tuple[str, list[Bind]]:
    """The job's program as the command names it, and the binds that show it
    in the sandbox when the system folders do not (e.g. a script in the
    operator's own folder, or a link in such a folder to a system program).
    A program in one of the ``private`` folders (real path, name) is refused."""
    found = shutil.which(name)
    if found is None:
        raise UnsupportedOption(
            f"entrypoint {name!r} is not an executable on this host",
            fields={"entrypoint": "not found on the host"},
        )
    path = os.path.abspath(found)
    real = os.path.realpath(path)
    for folder, what in private:
        if inside(real, folder) or inside(path, folder):
            raise UnsupportedOption(
                f"entrypoint {name!r} is a file in {what}: a job may not run it",
                fields={"entrypoint": f"inside {what}"},
            )

    def shown(p: str) -> bool:
        return shown_by_system(p) or any(inside(p, str(ro)) for ro in read_only_paths)

    binds = []
    if not shown(real):
        binds.append(Bind(real, real))
    if path != real and not shown(path):
        binds.append(Bind(real, path))
    # a relative path would be taken from the job's folder, not from where pman found it
    named = path if "/" in name and not name.startswith("/") else name
    return named, binds


def sandbox_run(
    spec: JobSpec,
    program: str,
    program_binds: list[Bind],
    bwrap: str,
    user: JobUser,
    read_only_paths: tuple[Path, ...],
) -> dict[str, Any]:
    """How the supervisor runs ``spec`` (see :func:`sandbox.build`): its
    ``program`` (as :func:`find_program` gave it) with the job's arguments,
    its input folder read-only and its output folder read-write."""
    m = spec.mounts
    incoming, outgoing = str(m.input_host), str(m.output_host)
    # the command names the host folders, as this backend always did, unless
    # those clash with /share where the job also sees them
    at_host = not any(overlap(p, "/share") for p in (incoming, outgoing))
    command = list(spec.command)
    if at_host:
        command = [rewrite_arg(a, incoming, outgoing) for a in command]
    command[0] = program
    folders = [Bind(incoming, incoming), Bind(outgoing, outgoing, writable=True)]
    folders = sorted(folders, key=lambda b: len(Path(b.dest).parts)) if at_host else []
    binds = [
        *(Bind(str(p), str(p)) for p in read_only_paths),
        *program_binds,
        *folders,
        Bind(incoming, INCOMING),
        Bind(outgoing, OUTGOING, writable=True),
    ]
    env = {"PATH": os.environ.get("PATH", ""), **dict(e.split("=", 1) for e in spec.env)}
    try:
        cwd = outgoing if at_host else OUTGOING
        return build(bwrap, user, binds, command, env, cwd)
    except ValueError as e:
        raise UnsupportedOption(str(e), fields={"env": str(e)}) from e
