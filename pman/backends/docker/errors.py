"""The docker SDK's errors as pman errors: ONE translation for every backend
that speaks the Docker Engine API (docker, podman, swarm), and the refusals a
container's start can mean."""

from __future__ import annotations

import functools

import docker.errors
import requests.exceptions

from pman.backends.kit.errors import ErrorTranslator
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    PmanError,
    UnsupportedOption,
)
from pman.models import JobSpec

#: request fields named by words in an engine's 4xx message
_ENGINE_WORDS = {"memory_limit": "memory", "cpu_limit": "cpu", "image": "image"}


def translate(e: Exception, doing: str, *, where: str, timeout: float) -> PmanError:
    """The pman error for ``e``, raised by the engine ``where`` (a few words
    naming it and its address) while ``doing``; ``timeout`` is the client's."""
    if isinstance(e, requests.exceptions.Timeout):
        return BackendUnavailable(f"{where} did not answer within {timeout:g} s while {doing}")
    if isinstance(e, requests.exceptions.ConnectionError | FileNotFoundError):
        return BackendUnavailable(f"{where} is unreachable while {doing}: {e}")
    if isinstance(e, docker.errors.APIError):
        text = str(e.explanation or e)
        if "not a swarm manager" in text:
            # only the swarm backend's calls get this answer
            return BackendUnavailable(
                f"{where} is not a swarm manager (run `docker swarm init` there, "
                f"or point DOCKER_HOST at a manager) while {doing}: {e.explanation}"
            )
        if e.status_code is not None and 400 <= e.status_code < 500:
            # name the request field the engine objects to, where it says
            fields = {f: text for f, word in _ENGINE_WORDS.items() if word in text.lower()}
            return InvalidJobSpec(f"{where} refused {doing}: {text}", fields=fields)
        return BackendError(f"{where} failed {doing}: {text}", detail=text)
    if isinstance(e, docker.errors.DockerException):
        return BackendUnavailable(f"{where}: {e}")
    return BackendError(f"{where} failed {doing}: {e}")


def translator(where: str, timeout: float) -> ErrorTranslator:
    """:func:`translate` for one engine, as ``with errors.doing(...)`` blocks use it."""
    return ErrorTranslator(functools.partial(translate, where=where, timeout=timeout))


def name_taken(what: str, name: str) -> str:
    """The message for a job name the engine has a ``what`` of already."""
    return f"a {what} named {name!r} exists already"


def start_refusal(e: Exception, spec: JobSpec, engine: str) -> PmanError | None:
    """What the ``engine`` refusing to start ``spec``'s container says about the
    request (a GPU it cannot give, a memory limit too small, a command not in
    the image), naming the field; None when it is not about the request."""
    if not isinstance(e, docker.errors.APIError):
        return None
    text = str(e.explanation or e)
    low = text.lower()
    if "device driver" in low or "gpu" in low or "nvidia" in low:
        return UnsupportedOption(
            f"gpu_limit={spec.resources.gpu_limit} cannot be met by the {engine}: {text}",
            fields={"gpu_limit": "no GPU available"},
        )
    if "memory limit" in low:
        return InvalidJobSpec(
            f"memory_limit={spec.resources.memory_limit} MiB is refused by the {engine}: {text}",
            fields={"memory_limit": "too small for the engine"},
        )
    if "executable file not found" in low or ("exec" in low and "no such file or directory" in low):
        return InvalidJobSpec(
            f"the {engine} could not start the command {spec.command[0]!r}: {text}",
            fields={"entrypoint": "not executable in the image"},
        )
    return None
