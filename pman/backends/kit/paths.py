"""The folders every job sees (/share/incoming, /share/outgoing) rewritten to
the host folders they stand for, for engines that run a job without a
container (local, SLURM's runtime none)."""

from __future__ import annotations

import re

from pman.models import INCOMING, OUTGOING

_ANYWHERE = re.compile(r"(?<![\w/.-])(/share/incoming|/share/outgoing)(?=/|$|[^\w.-])")


def rewrite_arg(arg: str, incoming: str, outgoing: str) -> str:
    """An argument that IS a container folder, or a path inside one, as the
    host path (``/share/outgoing/x`` -> ``<outgoing>/x``); others unchanged."""
    for container_path, host_path in ((INCOMING, incoming), (OUTGOING, outgoing)):
        if arg == container_path or arg.startswith(container_path + "/"):
            return host_path + arg[len(container_path) :]
    return arg


def rewrite_text(text: str, incoming: str, outgoing: str) -> str:
    """Every container folder anywhere in ``text``, alone or as a path prefix
    (``--out=/share/outgoing/x``), as the host folder."""
    return _ANYWHERE.sub(lambda m: incoming if m.group(1) == INCOMING else outgoing, text)
