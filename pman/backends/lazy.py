"""Names an engine package exports, imported when first asked for.

An engine package (pman/backends/<engine>/) is imported whenever its settings
are (``<engine>.settings``: pman's settings read every engine's section), so
its ``__init__`` must not import the adapter and the engine's client library
(the docker SDK, the kubernetes client) by itself: a library a backend needs
matters only to the sites that run it. The package's ``__init__`` says
instead::

    __getattr__ = exports(__name__, {"DockerBackend": "adapter"})

and ``from pman.backends.docker import DockerBackend`` imports
``pman.backends.docker.adapter`` then (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name in ``names`` comes
    from the submodule named there (relative to ``package``)."""

    def __getattr__(name: str) -> Any:
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
