"""Configuration from environment variables, read once at start-up.

Settings are declared once, in sections (pman.settings.declare): the global
ones here (core, server, registry, auth, webhooks) and those of a compute
resource (pman.settings.resource: engine choice, storage, jobs, limits, and
the chosen engine's own section, which each engine declares in its package:
pman/backends/<engine>/settings.py, listed in pman.backends.SETTINGS). Every
variable is checked and every problem is reported together in one
:class:`~pman.errors.ConfigError`; loading never touches the network.
docs/configuration.md, the reference of every variable, is written from the
declarations (``python -m pman.settings reference``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pman.settings.auth import AuthSettings
from pman.settings.core import CoreSettings
from pman.settings.declare import Environ, Problems, Section
from pman.settings.registry import RegistrySettings
from pman.settings.resource import Resource, load_resource, resource_variables
from pman.settings.resources import (
    DEFAULT_RESOURCE,
    ResourceList,
    prefix_clashes,
    resource_prefix,
)
from pman.settings.server import ServerSettings, ServeSettings
from pman.settings.webhooks import WebhookSettings

__all__ = [
    "DEFAULT_RESOURCE",
    "GLOBAL_SECTIONS",
    "Resource",
    "Settings",
    "load_serve_settings",
    "load_settings",
]

#: the sections read once for the whole service, in the reference's order
GLOBAL_SECTIONS: tuple[type[Section], ...] = (
    CoreSettings,
    ResourceList,
    ServerSettings,
    RegistrySettings,
    AuthSettings,
    WebhookSettings,
)


@dataclass(frozen=True)
class Settings:
    """Everything pman is configured with. Build it with :func:`load_settings`."""

    core: CoreSettings
    server: ServerSettings
    registry: RegistrySettings
    auth: AuthSettings
    webhooks: WebhookSettings
    #: the compute resources, in the order jobs are offered to them (PMAN_RESOURCES)
    resources: tuple[Resource, ...]
    #: pman's own version
    server_version: str

    @property
    def resource(self) -> Resource:
        """The first resource (the only one without PMAN_RESOURCES)."""
        return self.resources[0]

    def resource_named(self, name: str) -> Resource | None:
        return next((r for r in self.resources if r.name == name), None)


def load_settings(
    environ: Mapping[str, str] | None = None, *, resource: str | None = None
) -> Settings:
    """Read and check every variable; raise ConfigError naming all bad ones at once.

    The resources are PMAN_RESOURCES' (pman.settings.resources); ``resource``
    reads that one alone instead, whatever PMAN_RESOURCES says (its own
    variables, ``<RESOURCE>_<VARIABLE>``, win over the unprefixed ones it
    inherits). Global sections are always unprefixed.
    """
    from pman import __version__

    environ = os.environ if environ is None else environ
    problems = Problems()
    env = Environ(environ)
    core = CoreSettings.load(env, problems)
    server = ServerSettings.load(env, problems)
    registry = RegistrySettings.load(env, problems)
    auth = AuthSettings.load(env, problems)
    webhooks = WebhookSettings.load(env, problems)
    listed = ResourceList.load(env, problems).names
    if resource is not None:
        named = ((resource, resource_prefix(resource)),)
    elif listed and listed != (DEFAULT_RESOURCE,):
        named = tuple((name, resource_prefix(name)) for name in listed)
        clashes = prefix_clashes(
            listed,
            resource_variables(),
            (e.name for cls in GLOBAL_SECTIONS for _, _, e in cls.variables()),
        )
        if clashes:
            problems.add("PMAN_RESOURCES", "; ".join(clashes.values()))
    else:
        named = ((DEFAULT_RESOURCE, ""),)
    scoped = named[0][1] != ""  # a named resource's problems say which it is
    resources = tuple(
        load_resource(
            environ,
            name,
            prefix,
            core.data_dir,
            problems.of_resource(name) if scoped else problems,
        )
        for name, prefix in named
    )
    webhooks.check(core.application_mode, problems)
    problems.raise_if_any()
    return Settings(
        core=core,
        server=server,
        registry=registry.with_defaults(core.data_dir),
        auth=auth,
        webhooks=webhooks,
        resources=resources,
        server_version=__version__,
    )


def load_serve_settings(environ: Mapping[str, str] | None = None) -> ServeSettings:
    """What ``pman serve`` listens on (the defaults of its options); ConfigError
    naming every bad variable."""
    problems = Problems()
    options = ServeSettings.load(Environ(os.environ if environ is None else environ), problems)
    problems.raise_if_any()
    return options
