"""A compute resource: an engine and everything pman runs its jobs there with.

Every section here is read through an :class:`~pman.settings.declare.Environ`,
so that a named resource reads ``<NAME>_<VARIABLE>`` first and inherits
``<VARIABLE>`` otherwise (pman.settings.resources: which resources there are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from pman.backends import REGISTRY, engine_sections
from pman.settings.declare import EngineSettings, Env, Environ, Problems, Section
from pman.settings.jobs import JobSettings
from pman.settings.limits import Limits
from pman.settings.storage import StorageSettings


class EngineChoice(Section):
    """Which engine runs the resource's jobs (its section is read too)."""

    title = "engine"

    container_env: Annotated[
        str,
        Env(
            "CONTAINER_ENV",
            "the backend: its engine's own section below is read too",
            choices=tuple(REGISTRY),
        ),
    ] = "local"


E = TypeVar("E", bound=EngineSettings)

#: the sections of a resource, in the order of the configuration reference
RESOURCE_SECTIONS: tuple[type[Section], ...] = (EngineChoice, StorageSettings, JobSettings, Limits)


@dataclass(frozen=True)
class Resource:
    """What one compute resource runs jobs with."""

    #: the resource's name (``default`` for the one of unprefixed variables)
    name: str
    #: the prefix of its own variables (``HPC_``; none for ``default`` alone)
    prefix: str
    container_env: str
    storage: StorageSettings
    jobs: JobSettings
    limits: Limits
    #: the section of ``container_env``'s engine (pman/backends/<engine>/settings.py)
    engine: EngineSettings

    def engine_as(self, kind: type[E]) -> E:
        """The engine's section, which an engine's backend knows to be a ``kind``."""
        if not isinstance(self.engine, kind):
            raise TypeError(
                f"the resource runs {self.container_env!r}: its engine settings are a "
                f"{type(self.engine).__name__}, not a {kind.__name__}"
            )
        return self.engine


def engine_section(name: str) -> type[EngineSettings]:
    """The section of the engine ``name``; an engine that declares none has an empty one."""
    return engine_sections().get(name, EngineSettings)


def resource_variables() -> tuple[str, ...]:
    """Every variable a resource reads (each may be prefixed)."""
    sections = (*RESOURCE_SECTIONS, *dict.fromkeys(engine_sections().values()))
    return tuple(dict.fromkeys(env.name for cls in sections for _, _, env in cls.variables()))


def load_resource(
    environ: Mapping[str, str],
    name: str,
    prefix: str,
    data_dir: Path | None,
    problems: Problems,
) -> Resource:
    """The resource ``name`` as ``environ`` sets it (``<prefix><VARIABLE>``
    first, ``<VARIABLE>`` inherited); every problem goes to ``problems``.
    ``data_dir`` (PMAN_DATA_DIR) fills in the defaults that depend on it."""
    env = Environ(environ, prefix)
    container_env = EngineChoice.load(env, problems).container_env
    storage = StorageSettings.load(env, problems)
    jobs = JobSettings.load(env, problems)
    limits = Limits.load(env, problems)
    # every engine's variables are checked, whichever engine runs (as pman
    # always has): a bad one is refused even while another engine is chosen
    sections = {cls: cls.load(env, problems) for cls in dict.fromkeys(engine_sections().values())}
    chosen = engine_section(container_env or "")
    engine = sections[chosen] if chosen in sections else chosen.load(env, problems)
    storage.check(container_env, env, problems)
    if container_env is not None:
        engine.check(storage, jobs, env, problems)
    if data_dir is not None:
        engine = engine.with_defaults(data_dir)
    return Resource(name, prefix, container_env or "", storage, jobs, limits, engine)
