"""Engine library errors become pman errors in ONE function per engine.

Each engine package writes a ``translate(error, doing) -> PmanError`` function
(what its library raises, and which pman error each means: unreachable,
refused request, failure) and wraps every engine call with it::

    errors = ErrorTranslator(translate_docker_error)

    with errors.doing(f"inspecting {name!r}"):
        container = api.inspect_container(name)

    @errors.call("stopping {name!r}")
    def cancel(self, name: str) -> None: ...

pman's own errors pass through unchanged, so an adapter may raise JobNotFound
or InvalidJobSpec inside a translated block.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from pman.errors import PmanError

P = ParamSpec("P")
R = TypeVar("R")

#: an engine's translation: the error raised while ``doing`` (words such as
#: "inspecting 'job-1'") as the pman error to raise instead
Translate = Callable[[Exception, str], PmanError]


class ErrorTranslator:
    """Applies one engine's :data:`Translate` to the errors of a block or a method."""

    def __init__(self, translate: Translate) -> None:
        self._translate = translate

    def error(self, e: Exception, doing: str) -> PmanError:
        """The pman error ``e`` stands for (``e`` itself if it is one already)."""
        if isinstance(e, PmanError):
            return e
        return self._translate(e, doing)

    @contextmanager
    def doing(self, doing: str) -> Iterator[None]:
        """Translate whatever the block raises (but pman's own errors)."""
        try:
            yield
        except PmanError:
            raise
        except Exception as e:
            raise self._translate(e, doing) from e

    def call(self, doing: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A method decorator: ``doing`` is formatted with the call's arguments
        by name (``"stopping {name!r}"``), only when an error happens."""

        def decorate(method: Callable[P, R]) -> Callable[P, R]:
            signature = inspect.signature(method)

            @functools.wraps(method)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                try:
                    return method(*args, **kwargs)
                except PmanError:
                    raise
                except Exception as e:
                    bound = signature.bind_partial(*args, **kwargs)
                    raise self._translate(e, doing.format(**bound.arguments)) from e

            return wrapper

        return decorate
