"""Engine markers from the fixtures a test uses.

A test that needs an engine is marked with it (``-m docker`` selects the
tests that need Docker, ``-m "not slurm"`` leaves out those that need
SLURM) from what it uses, not from markers written by hand:

* a fixture named for an engine: a word of its name (``postgresql_url``);
* a fixture known to start one (FIXTURE_ENGINES: ``served`` starts a pman
  on the local backend, ``kube`` the Kubernetes stand-in...), used directly
  or through another fixture;
* an engine-selecting argument (ENGINE_ARGUMENTS: the ``pman``, ``cpman``,
  ``backend`` fixtures' parameters, a ``backend_name`` of parametrize...)
  whose value names the engine;
* a literal engine handed to ``make_pman`` in the test's body
  (``make_pman("docker")``; ``SLURM_CONTAINER_RUNTIME="docker"`` too).

An engine that runs on another brings that one too (ENGINE_NEEDS: the
Kubernetes stand-in's pods are Docker containers). Markers written by hand
still count; they are needed only where none of the above says it.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

#: the markers that name what a test needs (pyproject.toml describes each)
ENGINES = frozenset(
    {"local", "docker", "podman", "swarm", "slurm", "kubernetes", "cromwell"}
    | {"sqlite", "postgresql"}
)
#: fixtures whose names do not say the engine they start
FIXTURE_ENGINES: dict[str, frozenset[str]] = {
    # a pman on the local backend, served by `pman serve` or gunicorn
    # (test_serve, test_cli, test_metrics, test_local_sandbox, test_availability, test_fuzz)
    "served": frozenset({"local"}),
    "serve": frozenset({"local"}),
    "fuzzed_server": frozenset({"local"}),
    # the Kubernetes API stand-in (tests/standins/kube)
    "kube": frozenset({"kubernetes"}),
    "kpman": frozenset({"kubernetes"}),
    # the Cromwell stand-in (tests/standins/cromwell)
    "standin": frozenset({"cromwell"}),
}
#: fixtures and parametrized arguments whose value is the name of an engine
ENGINE_ARGUMENTS = frozenset({"pman", "cpman", "backend", "backend_name", "registry"})
#: fixtures called in a test's body with the engine as first argument
ENGINE_FACTORIES = frozenset({"make_pman"})
#: engines that run on another one
ENGINE_NEEDS: dict[str, frozenset[str]] = {
    # a swarm is the Docker engine in swarm mode
    "swarm": frozenset({"docker"}),
    # the stand-in's pods are Docker containers
    "kubernetes": frozenset({"docker"}),
    # the stand-in runs workflows with miniwdl as swarm services
    "cromwell": frozenset({"docker", "swarm"}),
}


def engines_of(item: pytest.Item) -> set[str]:
    """The engines ``item`` needs, from its fixtures, its parameters and its body."""
    found: set[str] = set()
    for name in getattr(item, "fixturenames", ()):
        found |= FIXTURE_ENGINES.get(name, frozenset())
        found |= ENGINES.intersection(name.split("_"))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for arg, value in callspec.params.items():
            if arg in ENGINE_ARGUMENTS and isinstance(value, str) and value in ENGINES:
                found.add(value)
    function = getattr(item, "function", None)
    if function is not None and ENGINE_FACTORIES.intersection(getattr(item, "fixturenames", ())):
        found |= factory_engines(function)
    for engine in list(found):
        found |= ENGINE_NEEDS.get(engine, frozenset())
    return found


@cache
def factory_engines(function: Callable[..., Any]) -> frozenset[str]:
    """Engines named by literal arguments of the test's calls to an engine factory:
    ``make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker")`` is slurm and docker."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ENGINE_FACTORIES
        ):
            continue
        literals = [a for a in node.args[:1] if isinstance(a, ast.Constant)]
        literals += [k.value for k in node.keywords if k.arg == "SLURM_CONTAINER_RUNTIME"]
        for arg in literals:
            if isinstance(arg, ast.Constant) and arg.value in ENGINES:
                found.add(arg.value)
    return frozenset(found)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark before ``-m`` selects (tryfirst: ahead of pytest's own deselection)."""
    for item in items:
        have = {m.name for m in item.iter_markers()}
        for engine in sorted(engines_of(item) - have):
            item.add_marker(engine)
