"""The configuration as ``pman doctor`` reads it: every bad variable a problem
of its own (with the variable's meaning as the fix), and what can still be
checked despite them: the registry when its variables are good, each
resource whose own variables are."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pman.backends.kit.doctor import Finding, ok, problem
from pman.errors import ConfigError
from pman.settings import (
    DEFAULT_RESOURCE,
    GLOBAL_SECTIONS,
    Resource,
    load_serve_settings,
    load_settings,
)
from pman.settings.core import CoreSettings
from pman.settings.declare import Environ, Problems, Section
from pman.settings.registry import RegistrySettings
from pman.settings.resource import RESOURCE_SECTIONS, load_resource
from pman.settings.resources import ResourceList, resource_prefix
from pman.settings.server import ServeSettings

CHECK = "configuration"


@dataclass
class Configuration:
    """What could be read: the core settings, the registry's (None when its
    variables are bad), the resources whose variables are all good, the names
    of the others, and the configuration's findings."""

    core: CoreSettings
    registry: RegistrySettings | None
    resources: list[Resource] = field(default_factory=list)
    #: names of resources whose variables have a problem (not checked further)
    broken: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def read(environ: Mapping[str, str] | None = None) -> Configuration:
    """The configuration of ``pman serve`` (its listening options too)."""
    environ = os.environ if environ is None else environ
    serving: dict[str, str] = {}
    try:
        load_serve_settings(environ)
    except ConfigError as e:
        serving = dict(e.fields or {})
    try:
        settings = load_settings(environ)
    except ConfigError as e:
        return _partial(environ, {**(e.fields or {}), **serving})
    if serving:
        return _partial(environ, serving)
    names = ", ".join(r.name for r in settings.resources)
    return Configuration(
        core=settings.core,
        registry=settings.registry,
        resources=list(settings.resources),
        findings=[ok(CHECK, f"every variable is valid (resources: {names})")],
    )


def _partial(environ: Mapping[str, str], fields: dict[str, str]) -> Configuration:
    """What can be read despite ``fields`` (variable -> its problem)."""
    env = Environ(environ)
    core_problems, registry_problems, list_problems = Problems(), Problems(), Problems()
    core = CoreSettings.load(env, core_problems)
    # a variable that could not be read stands at its default for what follows
    core = core.model_copy(
        update={
            name: CoreSettings.default_of(name)
            for name, value in dict(core).items()
            if value is None and CoreSettings.default_of(name) is not None
        }
    )
    registry = RegistrySettings.load(env, registry_problems)
    names = ResourceList.load(env, list_problems).names
    listed = [(DEFAULT_RESOURCE, "")]
    if list_problems.fields:
        listed = []  # which resources there are is unknown: none is checked
    elif names and names != (DEFAULT_RESOURCE,):
        listed = [(name, resource_prefix(name)) for name in names]
    resources: list[Resource] = []
    broken: list[str] = []
    for name, prefix in listed:
        problems = Problems()
        resource = load_resource(environ, name, prefix, core.data_dir, problems)
        if problems.fields:
            broken.append(name)
        else:
            resources.append(resource)
    return Configuration(
        core=core,
        registry=None if registry_problems.fields else registry.with_defaults(core.data_dir),
        resources=resources,
        broken=broken,
        findings=[
            problem(CHECK, f"{variable}: {message}", fix_of(variable, listed)).of(
                _resource_of(variable, listed)
            )
            for variable, message in sorted(fields.items())
        ],
    )


def _resource_of(variable: str, listed: list[tuple[str, str]]) -> str:
    """The resource whose own variable this is, "" for a global or inherited one."""
    return next((name for name, prefix in listed if prefix and variable.startswith(prefix)), "")


def fix_of(variable: str, listed: list[tuple[str, str]]) -> str:
    """What the variable means, from its declaration: the fix of a bad value."""
    bare = variable
    for _, prefix in listed:
        if prefix and variable.startswith(prefix):
            bare = variable[len(prefix) :]
    from pman.backends import engine_sections

    sections: list[type[Section]] = [
        *GLOBAL_SECTIONS,
        ServeSettings,
        *RESOURCE_SECTIONS,
        *dict.fromkeys(engine_sections().values()),
    ]
    for section in sections:
        for name, _, env in section.variables():
            if env.name == bare:
                default = section.default_of(name)
                shown = env.default_doc or (repr(default) if default not in (None, "") else "")
                choices = f" (one of: {', '.join(env.choices)})" if env.choices else ""
                return f"set {variable} to {env.form or 'a valid value'}{choices}: {env.doc}" + (
                    f"; default: {shown}" if shown else ""
                )
    return f"set {variable} to a valid value (docs/configuration.md lists every variable)"
