"""Which compute resources one pman serves: ``PMAN_RESOURCES`` and the names in it.

``PMAN_RESOURCES=hpc,gpu,local`` gives pman three resources, offered jobs in
that order; each reads ``<NAME>_<VARIABLE>`` for every variable of a
resource (pman.settings.resource) and inherits ``<VARIABLE>`` when its own
is unset. Without ``PMAN_RESOURCES``, the unprefixed variables are one
resource named ``default``, as pman always had.

A name is a lowercase DNS label (it is a URL path word: ``/<name>/api/v1/``,
and a label value on engines); its variables' prefix is the name in upper
case with ``-`` as ``_``. Refused: the API's own top-level path words, a
name whose prefix would make one of its variables another variable's name
(a global one, or another resource's), and ``default`` beside other
resources (the unprefixed variables are every resource's defaults: a
resource of that name would read as theirs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from pman.settings.declare import Env, Section

#: the resource of the unprefixed variables, when PMAN_RESOURCES is not set
DEFAULT_RESOURCE = "default"

#: top-level path words of pman's own: no resource may be served under them
RESERVED_NAMES = frozenset({"api", "ui", "ga4gh", "health", "metrics", "docs"})

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def resource_prefix(name: str) -> str:
    """The prefix of a resource's own variables: ``hpc`` -> ``HPC_``,
    ``gpu-a`` -> ``GPU_A_``."""
    return name.upper().replace("-", "_") + "_"


def parse_resource_names(text: str) -> tuple[str, ...]:
    """PMAN_RESOURCES' names, in order; ValueError saying what is wrong."""
    names = tuple(part.strip() for part in text.split(","))
    if names == ("",):
        raise ValueError("Name at least one resource (or leave it unset for one named default).")
    for name in names:
        if not name:
            raise ValueError("An empty name between commas.")
        if not _LABEL.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a lowercase DNS label: 1-63 characters of a-z, 0-9 and "
                "'-', starting and ending with a letter or digit."
            )
        if name in RESERVED_NAMES:
            raise ValueError(
                f"{name!r} is reserved: it is one of pman's own URL path words "
                f"({', '.join(sorted(RESERVED_NAMES))})."
            )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{name!r} is named twice.")
        seen.add(name)
    if DEFAULT_RESOURCE in names and len(names) > 1:
        raise ValueError(
            f"{DEFAULT_RESOURCE!r} beside other resources is ambiguous: the unprefixed "
            "variables are every resource's defaults; give it another name."
        )
    return names


class ResourceList(Section):
    """The compute resources pman serves (global)."""

    title = "resources"

    names: Annotated[
        tuple[str, ...] | None,
        Env(
            "PMAN_RESOURCES",
            "the compute resources, comma-separated lowercase DNS labels, in the order a "
            "job that names none is offered to them; each reads `<NAME>_<VARIABLE>` for "
            "every variable of the [resource](#resource-engine) sections below (`HPC_CONTAINER_"
            "ENV`, `GPU_PMAN_MAX_RUNNING`; `-` in a name is `_` in its prefix) and inherits "
            "`<VARIABLE>` when that is unset. Reserved: "
            + ", ".join(f"`{n}`" for n in sorted(RESERVED_NAMES))
            + ", and `default` beside other names (`default` alone is the same as unset)",
            parse=parse_resource_names,
            form="comma-separated names",
            default_doc="one resource named `default`, of the unprefixed variables",
        ),
    ] = None


def prefix_clashes(
    names: Iterable[str], resource_variables: Iterable[str], global_variables: Iterable[str]
) -> dict[str, str]:
    """Resources whose prefixed variables would be read as another variable:
    name -> why. ``HPC_`` + ``GPU_X`` and a resource ``hpc-gpu``'s ``X`` are
    the same text, as are a resource ``pman``'s ``MAX_RUNNING`` and the global
    ``PMAN_MAX_RUNNING`` if that existed."""
    variables = tuple(resource_variables)
    known = set(variables) | set(global_variables)
    owner: dict[str, tuple[str, str]] = {}
    clashes: dict[str, str] = {}
    for name in names:
        prefix = resource_prefix(name)
        for variable in variables:
            full = prefix + variable
            if full in known:
                clashes.setdefault(
                    name,
                    f"resource {name!r}: its {variable} would be {full}, "
                    "which is a variable of its own; choose another name",
                )
            elif full in owner and owner[full][0] != name:
                other, other_variable = owner[full]
                clashes.setdefault(
                    name,
                    f"resource {name!r}: its {variable} and resource {other!r}'s "
                    f"{other_variable} would both be {full}; choose other names",
                )
            else:
                owner[full] = (name, variable)
    return clashes
