"""The configuration reference (docs/configuration.md), written from the declarations.

``python -m pman.settings reference --output docs/configuration.md`` writes
it; a unit test fails when the committed file and the declarations differ.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from pman.backends import engine_sections
from pman.settings import GLOBAL_SECTIONS
from pman.settings.declare import EngineSettings, Env, Section, value_type
from pman.settings.resource import RESOURCE_SECTIONS
from pman.settings.server import ServeSettings

#: where the reference is kept, from the repository's root
REFERENCE_PATH = Path("docs/configuration.md")

_INTRO = """\
# Configuration reference

<!-- Written by `python -m pman.settings reference --output docs/configuration.md`
from the declarations in pman/settings/ and each engine's
pman/backends/<engine>/settings.py: edit those, not this file (a unit test
fails when the two differ). -->

Everything is an environment variable; every bad one is reported at start-up,
all together, and pman refuses to start. Loading settings never touches the
network.

How values are read: a boolean is `yes`/`no`, `true`/`false`, `on`/`off`,
`y`/`n`, `t`/`f` or `1`/`0` (lower, Capitalised or UPPER case); a number is
an integer or a decimal number (no NaN or infinity) within the bounds given,
and an empty value is an error for either; a list is comma-separated.
"""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def type_words(field: FieldInfo, env: Env) -> str:
    """What the variable's text looks like."""
    if env.form is not None:
        return env.form
    kind = value_type(field)
    if env.choices is not None:
        return ", ".join(f"`{c}`" for c in env.choices)
    if kind is bool:
        return "yes/no"
    if kind in (int, float):
        noun = "integer" if kind is int else "number"
        if env.ge is not None and env.le is not None:
            return f"{noun}, {_number(env.ge)} to {_number(env.le)}"
        if env.ge is not None:
            return f"{noun} ≥ {_number(env.ge)}"
        return noun
    if kind is Path:
        return "path"
    if typing.get_origin(kind) is tuple:
        return "comma-separated list"
    if kind is dict or typing.get_origin(kind) is dict:
        return "`key=value,...`"
    return "text"


def default_words(field: FieldInfo, env: Env) -> str:
    """The default, as a reader would set it."""
    if env.default_doc is not None:
        return env.default_doc
    value: Any = field.default
    if value is None or value in ((), {}, ""):
        return "—"
    if isinstance(value, bool):
        return "`yes`" if value else "`no`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    if isinstance(value, tuple):
        return f"`{','.join(map(str, value))}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section_table(section: type[Section], *, own: bool = False) -> str:
    rows = ["| variable | default | form | meaning |", "|---|---|---|---|"]
    variables = section.own_variables() if own else section.variables()
    for _, field, env in variables:
        rows.append(
            f"| `{env.name}` | {_cell(default_words(field, env))} | "
            f"{_cell(type_words(field, env))} | {_cell(env.doc)} |"
        )
    return "\n".join(rows)


def _doc(section: type[Section]) -> str:
    return " ".join((section.__doc__ or "").split())


def _section(section: type[Section], level: str = "###", heading: str = "") -> str:
    return f"{level} {heading or section.title}\n\n{_doc(section)}\n\n{section_table(section)}\n"


def _engine(name: str, section: type[EngineSettings]) -> str:
    text = f"### {name}\n\n`CONTAINER_ENV={name}`: {_doc(section)}\n"
    extends = issubclass(section.__mro__[1], EngineSettings)
    if not any(True for _ in section.own_variables()):
        return text
    return f"{text}\n{section_table(section, own=extends)}\n"


def reference() -> str:
    """docs/configuration.md, from the declarations."""
    parts = [_INTRO]
    parts.append("## Global settings\n\nRead once for the whole service.\n")
    parts += [_section(s) for s in GLOBAL_SECTIONS]
    parts.append(
        "## Resource settings\n\nWhat the compute resource jobs run on is configured with: "
        "its engine, its storage, how it runs each job, what a job may ask for.\n"
    )
    parts += [_section(s) for s in RESOURCE_SECTIONS]
    parts.append(
        "## Engines\n\nThe section of the engine `CONTAINER_ENV` names. Every engine's "
        "variables are checked at start-up, whichever engine runs.\n"
    )
    parts += [_engine(name, section) for name, section in engine_sections().items()]
    parts.append(
        "## `pman serve`\n\nRead by the `pman serve` command alone (an application a WSGI "
        "server builds ignores them).\n"
    )
    parts.append(_section(ServeSettings, heading="serve"))
    return "\n".join(parts)
