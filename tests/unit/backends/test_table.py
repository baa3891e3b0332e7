"""The backend table: engines' packages export lazily, each resource's engine
section is the engine's own."""

from __future__ import annotations

import pytest

import pman.backends.docker
from pman.backends.docker.settings import DockerSettings
from pman.backends.swarm.settings import SwarmSettings
from pman.settings import load_settings


def test_an_engine_package_exports_its_names_and_no_other() -> None:
    from pman.backends.docker import DockerBackend
    from pman.backends.docker.adapter import DockerBackend as same

    assert DockerBackend is same
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pman.backends.docker.nothing  # noqa: B018


def test_a_resource_gives_its_engine_section_as_the_kind_asked() -> None:
    s = load_settings({"CONTAINER_ENV": "swarm", "STOREBASE": "/sb"})
    assert isinstance(s.resource.engine_as(DockerSettings), SwarmSettings)  # swarm's extends it
    assert s.resource.engine_as(SwarmSettings).pending_timeout == 60.0
    local = load_settings({"STOREBASE": "/sb"})
    with pytest.raises(TypeError, match="LocalSettings, not a DockerSettings"):
        local.resource.engine_as(DockerSettings)
